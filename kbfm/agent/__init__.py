"""An agent that answers a question by chaining registered kbfm tools (ChemCrow-style)."""

from .loop import AgentStep, ScriptedPolicy, Transcript, run_agent
from .tools import TOOLS, AgentSession, tool_schema

__all__ = [
    "TOOLS",
    "AgentSession",
    "AgentStep",
    "ScriptedPolicy",
    "Transcript",
    "run_agent",
    "tool_schema",
]
