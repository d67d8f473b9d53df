"""Task specs as data: one YAML file per task, validated into `lorabench.specs.TaskSpec` on load."""
