"""``GET /pipeline``: the state machine's states and transitions, read from the ASL file that runs.

The web view draws the pipeline from this (with the task's current step highlighted), so there is
no second definition of it: the states, their order and their agents are the ASL file's, the one
Step Functions runs and the local runner reads (``PIPELINE_DEFINITION``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from agentic.pipeline import default_definition_text

router = APIRouter(tags=["pipeline"])


class PipelineState(BaseModel):
    name: str
    type: str = Field(description="The ASL state type: Task, Choice, Fail, ...")
    comment: str | None = None
    step_id: str | None = Field(default=None, description="The task step this state runs (agent steps only).")
    agent_type: str | None = None
    action: str | None = Field(
        default=None, description="What a Task state does: plan, step, await_approval, complete, fail."
    )
    next: list[str] = Field(description="States it can go on to (Next, Choices, Default), in order.")
    catch: list[str] = Field(default_factory=list, description="Where an error it catches goes.")
    end: bool = False


class PipelineGraph(BaseModel):
    start_at: str
    comment: str | None = None
    states: list[PipelineState]


def graph_of(asl: dict[str, Any]) -> PipelineGraph:
    states = []
    for name, state in asl["States"].items():
        parameters = state.get("Parameters") or {}
        # A service integration (lambda:invoke) carries the function's input in Payload.
        parameters = (
            parameters.get("Payload", parameters) if isinstance(parameters.get("Payload"), dict) else parameters
        )
        targets = [choice["Next"] for choice in state.get("Choices", []) if "Next" in choice]
        targets += [state[key] for key in ("Next", "Default") if key in state]
        states.append(
            PipelineState(
                name=name,
                type=state["Type"],
                comment=state.get("Comment"),
                step_id=parameters.get("step_id"),
                agent_type=parameters.get("agent_type"),
                action=parameters.get("action"),
                next=list(dict.fromkeys(targets)),
                catch=[c["Next"] for c in state.get("Catch", []) if "Next" in c],
                end=bool(state.get("End")) or state["Type"] in ("Succeed", "Fail"),
            )
        )
    return PipelineGraph(start_at=asl["StartAt"], comment=asl.get("Comment"), states=states)


@router.get("/pipeline", response_model=PipelineGraph)
def pipeline(request: Request) -> PipelineGraph:  # reads a file: FastAPI runs it in a thread
    """The pipeline's states and transitions, from the state-machine file this server runs."""
    path: Path | None = request.app.state.service.settings.pipeline_definition
    text = path.read_text(encoding="utf-8") if path is not None else default_definition_text()[0]
    return graph_of(json.loads(text))
