"""template.yaml as CloudFormation deploys it: the SAM transform, run with the SAM CLI's own translator.

The translator lives in the SAM CLI's virtualenv (.venv-sam, installed by `make test`); the template's
local paths are replaced by S3 URIs, and managed policy ARNs are not looked up (no AWS call).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import lru_cache
from typing import Any

import pytest

from tests.functional.aws.support import ROOT

TEMPLATE = ROOT / "template.yaml"

_TRANSFORM = r"""
import json, sys
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

class NoManagedPolicies:
    def load(self):
        return {}

template, errors = decode(sys.argv[1])
assert not errors, errors
template = json.loads(json.dumps(template, default=str))
for r in template["Resources"].values():
    for key in ("CodeUri", "DefinitionUri", "ContentUri"):
        if isinstance(r.get("Properties", {}).get(key), str):
            r["Properties"][key] = "s3://bucket/key"
print(json.dumps(transform(template, {}, NoManagedPolicies())))
"""


@lru_cache(maxsize=1)
def _transformed() -> str:
    python = ROOT / ".venv-sam" / "bin" / "python"
    if not python.exists():
        pytest.fail("the SAM CLI's virtualenv (.venv-sam) is missing: run `make lint-template` once")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    result = subprocess.run(
        [str(python), "-c", _TRANSFORM, str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def transformed_template() -> dict[str, Any]:
    """The CloudFormation template SAM generates (a fresh copy each call)."""
    template: dict[str, Any] = json.loads(_transformed())
    return template


def function_roles(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Lambda function's generated execution role, by the function's logical id."""
    resources = template["Resources"]
    roles = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        role = resource["Properties"]["Role"]
        role_name = role["Fn::GetAtt"][0] if isinstance(role, dict) else None
        assert role_name in resources, name
        roles[name] = resources[role_name]
    return roles


# --- what a template grants for given parameters --------------------------------------------------------

#: Fn::If's "no value" branch.
NO_VALUE = object()
PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "agentic",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/agentic/0f1e2d3c-aaaa-bbbb-cccc-000000000000",
}


class Resolver:
    """CloudFormation's intrinsic functions (Ref, Fn::If/Sub/Select/Split/Join, conditions) for one
    set of parameters, so a test sees the ARNs and statements a deployment with them gets."""

    def __init__(self, template: dict[str, Any], **parameters: str) -> None:
        defaults = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
        self.values: dict[str, Any] = {**PSEUDO_PARAMETERS, **defaults, **parameters}
        self.conditions: dict[str, Any] = template.get("Conditions", {})
        self._decided: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._decided:
            self._decided[name] = bool(self.resolve(self.conditions[name]))
        return self._decided[name]

    def _sub(self, text: str, names: dict[str, Any]) -> str:
        # A name that is no parameter is a resource's (``${TimerScheduleGroup}``): kept as ``<name>``.
        known = {**self.values, **names}
        return re.sub(r"\$\{([\w:]+)\}", lambda m: str(known.get(m.group(1), f"<{m.group(1)}>")), text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return NO_VALUE if value == "AWS::NoValue" else self.values.get(value, f"<{value}>")
            if key == "Condition" and isinstance(value, str):
                return self.condition(value)
            if key == "Fn::If":
                name, yes, no = value
                return self.resolve(yes if self.condition(name) else no)
            if key == "Fn::Sub":
                text, names = (value, {}) if isinstance(value, str) else (value[0], self.resolve(value[1]))
                return self._sub(text, names)
            if key == "Fn::Select":
                return self.resolve(value[1])[int(value[0])]
            if key == "Fn::Split":
                return str(self.resolve(value[1])).split(value[0])
            if key == "Fn::Join":
                return value[0].join(str(v) for v in self.resolve(value[1]))
            if key == "Fn::Equals":
                return self.resolve(value[0]) == self.resolve(value[1])
            if key == "Fn::And":
                return all(self.resolve(v) for v in value)
            if key == "Fn::Or":
                return any(self.resolve(v) for v in value)
            if key == "Fn::Not":
                return not self.resolve(value[0])
            if key == "Fn::GetAtt":
                return f"<{'.'.join(value)}>"
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in node.items()) if r is not NO_VALUE}


def granted_statements(role: dict[str, Any], resolver: Resolver) -> list[dict[str, Any]]:
    """The statements of a role's inline policies, as deployed with the resolver's parameters."""
    policies = resolver.resolve(role["Properties"].get("Policies", []))
    return [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]
