"""lorabench: a benchmark for composing pre-trained LoRA modules for few-shot transfer.

Data flows one way: task spec -> data -> backbone -> method -> evaluator (one cell) -> grid -> results ->
leaderboard. The README's module map lists every module in that order.
"""

__version__ = "0.1.0"
