"""Built-in methods. Each is a small class registered through the `lorabench.methods` entry-point
group in pyproject.toml, exactly as a third-party plugin would be."""
