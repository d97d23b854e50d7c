"""The sandbox tests' workspace (state and key file inside it: the hardest case to hide)."""

from tests.test_sandbox import workspace

__all__ = ["workspace"]
