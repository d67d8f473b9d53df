"""lorabench: a benchmark for composing pre-trained LoRA modules for few-shot transfer.

Data flows one way: task spec -> data -> backbone -> method -> evaluator -> results -> leaderboard.
"""

__version__ = "0.1.0"
