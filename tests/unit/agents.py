"""Agent sources for unit tests (plain strings; nothing here runs them)."""

from __future__ import annotations


def tiny_agent(tag: str, *, description: str = "", body: str = "return {'tag': TAG}") -> str:
    """A small distinct agent; ``tag`` changes the code (and so the code hash)."""
    return (
        f'"""Agent {tag}."""\n\nTAG = {tag!r}\n\n\n'
        f"class Tiny:\n"
        f'    """{description or "A tiny agent."}"""\n\n'
        f"    def get_capabilities(self) -> dict:\n"
        f'        """Capabilities."""\n'
        f'        return {{"name": {tag!r}, "tags": ["tiny"]}}\n\n'
        f"    def execute(self, inputs: dict) -> dict:\n"
        f'        """Runs."""\n'
        f"        {body}\n"
    )
