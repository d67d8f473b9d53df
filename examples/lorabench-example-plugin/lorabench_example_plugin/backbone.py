"""example_mobilenet: a backbone plugin (random-initialised timm MobileNetV3-Small-0.5, 64 px), LoRA on the
pointwise 1x1 convolutions. A real plugin would load pretrained weights here, beside their preprocessing."""

from lorabench.backbones import Backbone
from lorabench.lora import TargetRule


def example_mobilenet() -> Backbone:
    """Random MobileNetV3-Small-0.5 at 64 px, LoRA on pointwise convs (example backbone plugin)."""
    import timm

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0)
    dim = model.head_hidden_size  # the pooled features after MobileNetV3's conv head (1024), not num_features
    return Backbone("example_mobilenet", "image", model, dim,
                    [TargetRule(r"blocks\.\d+\.\d+\.conv_(pw|pwl)")], image_size=64, pretrained=False,
                    aliases={"example_mobilenet", "mobilenetv3_small_050"})
