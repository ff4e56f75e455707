"""The model in the deployment (issue 13): template parameters, the functions' environment, IAM grants
on the configured model or key only, and the key read once per container.

The grants are read from the SAM-transformed template and resolved for given parameters
(``template_support.Resolver``), so the ARNs tested are the ones CloudFormation would build.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters as powertools_parameters
from botocore.client import BaseClient
from moto import mock_aws

from agentic.aws.wiring import ConfigurationError, build_aws_system, get_system, reset_system
from agentic.settings import Settings
from tests.functional.aws.support import REGION, TABLE_NAME
from tests.functional.aws.template_support import Resolver, function_roles, granted_statements, transformed_template

pytestmark = pytest.mark.functional

MODEL_FUNCTIONS = ("AnalyzerFunction", "WriterFunction")
HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
ACCOUNT_REGION = "us-east-1:123456789012"
OPENAI_WITH_SECRET = {"ModelProvider": "openai", "ModelId": "m", "ModelApiKeyParameter": "secretsmanager:agentic/k"}


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return transformed_template()


def model_statements(generated: dict[str, Any], function: str, **parameters: str) -> list[dict[str, Any]]:
    """The function's statements that reach a model or its key, deployed with ``parameters``."""
    role = function_roles(generated)[function]
    statements = granted_statements(role, Resolver(generated, **parameters))
    model_services = ("bedrock:", "secretsmanager:", "ssm:")
    return [s for s in statements if any(str(a).startswith(model_services) for a in _list(s["Action"]))]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_default_deployment_calls_no_model_and_is_granted_none(generated):
    for function in MODEL_FUNCTIONS:
        assert model_statements(generated, function) == []
    environment = Resolver(generated).resolve(generated["Resources"]["WriterFunction"]["Properties"]["Environment"])
    assert environment["Variables"]["MODEL_PROVIDER"] == "template"


def test_the_analyzer_and_writer_get_the_model_settings_and_no_other_function_does(generated):
    resolver = Resolver(
        generated, ModelProvider="bedrock", ModelId=HAIKU, ModelApiKeyParameter="", ModelBaseUrl="https://x.test/v1"
    )
    for name, resource in generated["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = resolver.resolve(resource["Properties"].get("Environment", {})).get("Variables", {})
        model = {k: v for k, v in variables.items() if k.startswith("MODEL_")}
        if name in MODEL_FUNCTIONS:
            assert model == {
                "MODEL_PROVIDER": "bedrock",
                "MODEL_ID": HAIKU,
                "MODEL_BASE_URL": "https://x.test/v1",
                "MODEL_API_KEY_PARAMETER": "",
            }, name
        else:
            assert model == {}, name
            for parameters in ({"ModelProvider": "bedrock", "ModelId": HAIKU}, OPENAI_WITH_SECRET):
                actions = {a for s in model_statements(generated, name, **parameters) for a in _list(s["Action"])}
                assert not {a for a in actions if a.split(":")[0] in ("bedrock", "secretsmanager", "ssm")}, name


def test_bedrock_is_granted_on_the_model_and_its_profile_in_this_region_only(generated):
    for function in MODEL_FUNCTIONS:
        [statement] = model_statements(generated, function, ModelProvider="bedrock", ModelId=HAIKU)
        assert set(statement["Action"]) == {"bedrock:InvokeModelWithResponseStream", "bedrock:InvokeModel"}
        assert statement["Resource"] == [
            f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}",
            f"arn:aws:bedrock:{ACCOUNT_REGION}:inference-profile/{HAIKU}",
        ]
        assert "Condition" not in statement


@pytest.mark.parametrize("prefix", ["us", "eu", "apac", "global"])
def test_a_cross_region_profile_may_reach_its_base_model_only_through_the_profile(generated, prefix):
    profile = f"{prefix}.{HAIKU}"
    direct, routed = model_statements(generated, "WriterFunction", ModelProvider="bedrock", ModelId=profile)
    assert direct["Resource"][1] == f"arn:aws:bedrock:{ACCOUNT_REGION}:inference-profile/{profile}"
    # the base model, in whichever region the profile routes the call to, and only through it
    assert routed["Resource"] == f"arn:aws:bedrock:*::foundation-model/{HAIKU}"
    assert routed["Condition"] == {
        "StringEquals": {"bedrock:InferenceProfileArn": f"arn:aws:bedrock:{ACCOUNT_REGION}:inference-profile/{profile}"}
    }


@pytest.mark.parametrize(
    ("reference", "action", "resource"),
    [
        (
            "secretsmanager:agentic/openai-key",
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:{ACCOUNT_REGION}:secret:agentic/openai-key-??????",
        ),
        (
            f"secretsmanager:arn:aws:secretsmanager:{ACCOUNT_REGION}:secret:agentic/openai-key-AbCdEf",
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:{ACCOUNT_REGION}:secret:agentic/openai-key-AbCdEf",
        ),
        ("ssm:/agentic/openai-key", "ssm:GetParameter", f"arn:aws:ssm:{ACCOUNT_REGION}:parameter/agentic/openai-key"),
    ],
)
def test_the_api_key_is_readable_from_the_configured_secret_or_parameter_only(generated, reference, action, resource):
    for function in MODEL_FUNCTIONS:
        [statement] = model_statements(
            generated, function, ModelProvider="openai", ModelId="gpt-4o-mini", ModelApiKeyParameter=reference
        )
        assert (statement["Action"], statement["Resource"]) == (action, resource)
    # and a Bedrock deployment reads no key, whatever the parameter says
    assert model_statements(generated, "WriterFunction", ModelProvider="bedrock", ModelId=HAIKU,
                            ModelApiKeyParameter=reference)[0]["Action"][0].startswith("bedrock:")  # fmt: skip


def test_no_model_grant_is_on_every_resource(generated):
    configurations = [
        {"ModelProvider": "bedrock", "ModelId": f"us.{HAIKU}"},
        {"ModelProvider": "openai", "ModelId": "m", "ModelApiKeyParameter": "secretsmanager:k"},
        {"ModelProvider": "openai", "ModelId": "m", "ModelApiKeyParameter": "ssm:/k"},
    ]
    for parameters in configurations:
        for statement in model_statements(generated, "AnalyzerFunction", **parameters):
            assert "*" not in _list(statement["Resource"]), parameters
            assert not any(a.endswith("*") for a in _list(statement["Action"])), parameters


def test_a_model_provider_needs_a_model_id_at_deploy_time(template):
    rule = template["Rules"]["ModelIdWithAModel"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ModelProvider"}, "template"]}]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ModelId"}, ""]}]}


# --- the key, read once per container (aws/wiring.py) -------------------------------------------------


@pytest.fixture
def key_store(aws_env: pytest.MonkeyPatch):
    """moto's Secrets Manager and SSM with a key in each; counts the reads of the key."""
    powertools_parameters.clear_caches()
    reads: list[str] = []
    real_call = BaseClient._make_api_call

    def counting(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation in ("GetSecretValue", "GetParameter"):
            reads.append(operation)
        return real_call(client, operation, params)

    with mock_aws():
        boto3.client("secretsmanager", region_name=REGION).create_secret(Name="agentic/key", SecretString="sk-secret")
        boto3.client("ssm", region_name=REGION).put_parameter(
            Name="/agentic/key", Value="sk-parameter", Type="SecureString"
        )
        aws_env.setattr(BaseClient, "_make_api_call", counting)
        yield reads
    powertools_parameters.clear_caches()


def openai_settings(reference: str) -> Settings:
    return Settings(
        store="dynamodb",
        table_name=TABLE_NAME,
        model_provider="openai",
        model_id="gpt-4o-mini",
        model_api_key_parameter=reference,
    )


@pytest.mark.parametrize(
    ("reference", "key"), [("secretsmanager:agentic/key", "sk-secret"), ("ssm:/agentic/key", "sk-parameter")]
)
def test_the_key_is_read_once_per_container_and_given_to_the_model(key_store, aws_env, reference, key):
    # Given a container configured with a key in Secrets Manager or SSM
    aws_env.setenv("MODEL_PROVIDER", "openai")
    aws_env.setenv("MODEL_ID", "gpt-4o-mini")
    aws_env.setenv("MODEL_API_KEY_PARAMETER", reference)
    reset_system()
    # When its system is used by several invocations
    model = get_system().ops.registry.get("writer").model
    for _ in range(3):
        assert get_system().ops.registry.get("writer").model is model
    # Then the model holds the key, read once
    assert model._api_key == key
    assert len(key_store) == 1


def test_a_key_that_cannot_be_read_stops_the_function_with_the_setting(key_store):
    with pytest.raises(ConfigurationError, match="MODEL_API_KEY_PARAMETER='secretsmanager:missing'"):
        build_aws_system(openai_settings("secretsmanager:missing"))


def test_a_malformed_key_reference_is_a_configuration_error(key_store):
    with pytest.raises(ConfigurationError, match="must be 'secretsmanager:"):
        build_aws_system(openai_settings("vault:agentic/key"))


def test_a_model_timeout_past_the_step_timeout_is_a_configuration_error(aws_env):
    settings = Settings(store="dynamodb", model_provider="bedrock", model_id=HAIKU, model_timeout_seconds=500)
    with pytest.raises(ConfigurationError, match="MODEL_TIMEOUT_SECONDS=500"):
        build_aws_system(settings)
