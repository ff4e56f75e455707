"""template.yaml as CloudFormation deploys it: the SAM transform, run with the SAM CLI's own translator.

The translator lives in the SAM CLI's virtualenv (.venv-sam, installed by `make test`); the template's
local paths are replaced by S3 URIs, and managed policy ARNs are not looked up (no AWS call).
"""

from __future__ import annotations

import json
import os
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
