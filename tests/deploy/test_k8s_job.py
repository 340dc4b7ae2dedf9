"""The Kubernetes Jobs dagster-k8s would create for a lake_hourly run under deploy/k8s/dagster.

No cluster and no helm: the Helm values are read with PyYAML and handed to dagster-k8s's own
K8sRunLauncher (built from config, as an instance builds it from the chart's dagster.yaml),
K8sContainerContext and construct_dagster_k8s_job, the way the chart's templates hand them over.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.instance.ref import InstanceRef
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._grpc.types import ExecuteRunArgs, ExecuteStepArgs
from dagster._serdes import ConfigurableClassData, deserialize_value
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    get_job_name_from_run_id,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)
from kubernetes.client import V1Container, V1Job

from orchestration.definitions import build
from orchestration.defs.lake import LAKE_RUN_K8S, LAKE_STEP_K8S
from sentinel.settings import PROJECT_ROOT, Settings

VALUES_FILE = PROJECT_ROOT / "deploy" / "k8s" / "dagster" / "values.yaml"
# The release deploy/k8s/dagster/README.md installs (`helm upgrade --install sentinel ... -n dagster`).
RELEASE, NAMESPACE = "sentinel", "dagster"
FULLNAME = f"{RELEASE}-dagster"  # the chart's `dagster.fullname` for that release
USER_DEPLOYMENTS_FULLNAME = f"{RELEASE}-dagster-user-deployments"  # the same, in its subchart
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default
IMAGE_WORKDIR = "/opt/sentinel"  # deploy/k8s/Dockerfile
RUN_RESOURCES = LAKE_RUN_K8S["container_config"]["resources"]
STEP_RESOURCES = LAKE_STEP_K8S["container_config"]["resources"]
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


# ------------------------------------------------------------- the values, as the chart renders them
@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def deployment(values: dict[str, Any]) -> dict[str, Any]:
    user_deployments = values["dagster-user-deployments"]
    assert user_deployments["enabled"]
    [only] = user_deployments["deployments"]
    assert only["name"] == "sentinel-lake"
    return dict(only)


def image_of(deployment: Mapping[str, Any]) -> str:
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def code_location_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    return {var["name"]: var["value"] for var in deployment["env"]}


def container_context_of(
    values: Mapping[str, Any], deployment: Mapping[str, Any]
) -> dict[str, Any]:
    """What the chart gives the code server as --container-context (the user deployments chart's
    `dagsterUserDeployments.k8sContainerContext`); the server attaches it to every run it starts."""
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{USER_DEPLOYMENTS_FULLNAME}-{deployment['name']}-user-env",
            *(source["name"] for source in deployment.get("envConfigMaps", [])),
        ],
        "namespace": NAMESPACE,
        "service_account_name": values["global"]["serviceAccountName"],
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [source["name"] for source in deployment["envSecrets"]]
    for key, field in [
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ]:
        if deployment.get(key):
            k8s[field] = deployment[key]
    if isinstance(deployment.get("env"), list):  # a map goes to the -user-env ConfigMap instead
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


def run_launcher_config(values: Mapping[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """dagster.yaml's run_launcher.config as the chart's `dagsterYaml.runLauncher.k8s` writes it;
    only the cluster credentials differ (a kubeconfig that is never dialled, not in-cluster)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = k8s.get("runK8sConfig") or {}
    config: dict[str, Any] = {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": CHART_DAGSTER_HOME,
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    for key, field in [("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")]:
        if k8s.get(key):
            config[field] = [source["name"] for source in k8s[key]]
    for key, field in [
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("securityContext", "security_context"),
    ]:
        if k8s.get(key):
            config[field] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    sections = [
        ("containerConfig", "container_config"),
        ("podSpecConfig", "pod_spec_config"),
        ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
        ("jobSpecConfig", "job_spec_config"),
        ("jobMetadata", "job_metadata"),
    ]
    if run_k8s:
        config["run_k8s_config"] = {
            field: run_k8s[key] for key, field in sections if key in run_k8s
        }
    return config


@pytest.fixture(scope="module")
def launcher(values: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> K8sRunLauncher:
    """The K8sRunLauncher the values configure, built the way an instance builds its run launcher
    from dagster.yaml (config checked against the launcher's own schema)."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG)
    config = yaml.safe_dump(run_launcher_config(values, kubeconfig))
    data = ConfigurableClassData("dagster_k8s", "K8sRunLauncher", config)
    return data.rehydrate(as_type=K8sRunLauncher)


@pytest.fixture(scope="module")
def instance_ref(tmp_path_factory: pytest.TempPathFactory) -> InstanceRef:
    """Stands for the Postgres-backed instance a run pod is told about (never opened here)."""
    return InstanceRef.from_dir(str(tmp_path_factory.mktemp("dagster_home")))


# ------------------------------------------------------------------- the code location and a run
@pytest.fixture(scope="module")
def pod_settings(deployment: dict[str, Any]) -> Iterator[Settings]:
    """Settings as a code server, run or step pod reads them: only the code location's env."""
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith("SENTINEL_")]:
            env.delenv(name)
        for name, value in code_location_env(deployment).items():
            env.setenv(name, value)
        yield Settings()


@pytest.fixture(scope="module")
def lake_hourly(pod_settings: Settings) -> dg.JobDefinition:
    return build(pod_settings).resolve_job_def("lake_hourly")


@pytest.fixture(scope="module")
def run(
    values: dict[str, Any], deployment: dict[str, Any], lake_hourly: dg.JobDefinition
) -> dg.DagsterRun:
    """A lake_hourly run as the code server hands it to the launcher: its origin carries the image
    (DAGSTER_CURRENT_IMAGE) and the container context."""
    origin = RepositoryPythonOrigin(
        executable_path="/usr/local/bin/python",
        code_pointer=ModuleCodePointer("orchestration.definitions", "defs", IMAGE_WORKDIR),
        container_image=image_of(deployment),
        entry_point=["dagster"],
        container_context=container_context_of(values, deployment),
    )
    return dg.DagsterRun(
        job_name=lake_hourly.name,
        run_id=str(uuid.uuid4()),
        tags=lake_hourly.run_tags,
        job_code_origin=JobPythonOrigin(lake_hourly.name, origin),
    )


# ------------------------------------------------------------------------------ the Jobs
def run_worker_job(
    launcher: K8sRunLauncher, instance_ref: InstanceRef, run: dg.DagsterRun
) -> tuple[V1Job, str | None]:
    """The Job K8sRunLauncher.launch_run creates for `run`, and the namespace it creates it in
    (dagster_k8s/launcher.py: launch_run and _launch_k8s_job_with_args)."""
    origin = run.job_code_origin
    assert origin is not None
    job_name = get_job_name_from_run_id(run.run_id)
    context = launcher.get_container_context_for_run(run)
    args = ExecuteRunArgs(
        job_origin=origin,
        run_id=run.run_id,
        instance_ref=instance_ref,
        set_exit_code_on_failure=launcher.fail_pod_on_run_failure,
    ).get_command_args()
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(
            job_image=origin.repository_origin.container_image, run_launcher=launcher
        ),
        args=args,
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": origin.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": origin.job_name}],
    )
    return job, context.namespace


def step_worker_job(
    launcher: K8sRunLauncher,
    instance_ref: InstanceRef,
    run: dg.DagsterRun,
    job_def: dg.JobDefinition,
    step: ExecutionStep,
) -> tuple[V1Job, str | None]:
    """The Job k8s_job_executor creates for one step, and its namespace (dagster_k8s/executor.py:
    K8sStepHandler.launch_step). Layers, least specific first: deployment and code location (not
    the run's tags), the executor's config and step_k8s_config, the step's own dagster-k8s/config
    tag (its op's tags), then per_step_k8s_config."""
    origin = run.job_code_origin
    assert origin is not None
    executor = ResolvedRunConfig.build(job_def, run.run_config).execution.execution_engine_config
    executor_context = K8sContainerContext(
        image_pull_policy=executor.get("image_pull_policy"),
        image_pull_secrets=executor.get("image_pull_secrets"),
        service_account_name=executor.get("service_account_name"),
        env_config_maps=executor.get("env_config_maps"),
        env_secrets=executor.get("env_secrets"),
        env_vars=executor.get("env_vars"),
        volume_mounts=executor.get("volume_mounts"),
        volumes=executor.get("volumes"),
        labels=executor.get("labels"),
        namespace=executor.get("job_namespace"),
        resources=executor.get("resources"),
        scheduler_name=executor.get("scheduler_name"),
        security_context=executor.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor.get("step_k8s_config", {})),
    )
    step_key = step.key
    per_op = executor.get("per_step_k8s_config", {}).get(step.op_name, {})
    context = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_op)))
    )
    job_config = context.get_k8s_job_config(executor.get("job_image"), launcher)
    if not job_config.job_image:
        job_config = job_config.with_image(origin.repository_origin.container_image)
    step_args = ExecuteStepArgs(
        job_origin=origin,
        run_id=run.run_id,
        step_keys_to_execute=[step_key],
        instance_ref=instance_ref,
        should_verify_step=True,
    )
    job_name = f"dagster-step-{get_k8s_job_name(run.run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=step_args.get_command_args(skip_serialized_namedtuple=True),
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": step_key, "dagster/run-id": run.run_id},
        env_vars=[
            *step_args.get_command_env(),
            {"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    return job, context.namespace


def container_of(job: V1Job) -> V1Container:
    [container] = job.spec.template.spec.containers
    return container


def env_of(container: V1Container) -> dict[str, str | None]:
    return {var.name: var.value for var in container.env}


@pytest.fixture(scope="module")
def run_job(
    launcher: K8sRunLauncher, instance_ref: InstanceRef, run: dg.DagsterRun
) -> tuple[V1Job, str | None]:
    return run_worker_job(launcher, instance_ref, run)


@pytest.fixture(scope="module")
def step_jobs(
    launcher: K8sRunLauncher,
    instance_ref: InstanceRef,
    run: dg.DagsterRun,
    lake_hourly: dg.JobDefinition,
) -> dict[str, tuple[V1Job, str | None]]:
    plan = create_execution_plan(lake_hourly, run_config=run.run_config)
    return {
        step.key: step_worker_job(launcher, instance_ref, run, lake_hourly, step)
        for step in plan.get_all_steps_in_topo_order()
        if isinstance(step, ExecutionStep)
    }


# ------------------------------------------------------------------------------ the tests
def test_code_location_env_makes_lake_hourly_run_each_step_on_the_k8s_job_executor(
    pod_settings: Settings, lake_hourly: dg.JobDefinition
) -> None:
    assert pod_settings.dagster_executor == "k8s"
    assert lake_hourly.executor_def.name == "k8s"
    assert not pod_settings.kafka_embedded  # never starts a broker in a pod
    assert pod_settings.kafka_bootstrap == "sentinel-kafka-bootstrap.kafka:9092"


def test_lake_hourly_tag_is_dagster_k8s_config_with_the_run_pod_resources(
    lake_hourly: dg.JobDefinition,
) -> None:
    config = get_user_defined_k8s_config(lake_hourly.run_tags)
    assert config.container_config == {"resources": RUN_RESOURCES}


def test_run_worker_job_runs_execute_run_for_lake_hourly_in_the_user_code_image(
    run_job: tuple[V1Job, str | None],
    run: dg.DagsterRun,
    values: dict[str, Any],
    deployment: dict[str, Any],
) -> None:
    job, namespace = run_job
    container = container_of(job)
    assert container.image == image_of(deployment) == "sentinel-lab:0.1.0"
    assert container.image_pull_policy == deployment["image"]["pullPolicy"]
    assert container.command is None  # the image has no ENTRYPOINT: args are the whole command
    assert container.args[:3] == ["dagster", "api", "execute_run"]
    execute = deserialize_value(container.args[3], ExecuteRunArgs)
    assert (execute.job_origin.job_name, execute.run_id) == ("lake_hourly", run.run_id)
    assert execute.set_exit_code_on_failure is True  # failPodOnRunFailure
    assert job.metadata.name == f"dagster-run-{run.run_id}"
    assert (
        namespace == NAMESPACE == values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]
    )
    for labels in (job.metadata.labels, job.spec.template.metadata.labels):
        assert labels["app.kubernetes.io/component"] == "run_worker"
        assert labels["dagster/job"] == "lake_hourly"
        assert labels["dagster/run-id"] == run.run_id
        assert labels["sentinel/code-location"] == "sentinel-lake"
    pod = job.spec.template.spec
    assert pod.service_account_name == values["global"]["serviceAccountName"]
    assert pod.restart_policy == "Never"
    assert job.spec.backoff_limit == 0  # Dagster retries, not Kubernetes


def test_run_worker_job_gets_the_code_location_env_and_the_postgres_password(
    run_job: tuple[V1Job, str | None], values: dict[str, Any], deployment: dict[str, Any]
) -> None:
    container = container_of(run_job[0])
    env = env_of(container)
    assert env["SENTINEL_DAGSTER_EXECUTOR"] == "k8s"
    assert (
        env["SENTINEL_KAFKA_BOOTSTRAP"] == code_location_env(deployment)["SENTINEL_KAFKA_BOOTSTRAP"]
    )
    assert env["SENTINEL_KAFKA_EXTERNAL"] == "true"
    assert env["DAGSTER_RUN_JOB_NAME"] == "lake_hourly"
    assert env["DAGSTER_HOME"] == CHART_DAGSTER_HOME
    [password] = [var for var in container.env if var.name == "DAGSTER_PG_PASSWORD"]
    assert password.value_from.secret_key_ref.name == values["global"]["postgresqlSecretName"]
    assert password.value_from.secret_key_ref.key == "postgresql-password"
    config_maps = [source.config_map_ref.name for source in container.env_from]
    assert f"{USER_DEPLOYMENTS_FULLNAME}-sentinel-lake-user-env" in config_maps


def test_run_worker_job_requests_the_run_pod_resources_of_the_job_tag(
    run_job: tuple[V1Job, str | None],
) -> None:
    resources = container_of(run_job[0]).resources
    assert resources.requests == RUN_RESOURCES["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert resources.limits == RUN_RESOURCES["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_run_worker_job_mounts_the_lake_volume_where_settings_put_the_lake(
    run_job: tuple[V1Job, str | None], pod_settings: Settings
) -> None:
    job = run_job[0]
    pod = job.spec.template.spec
    [volume] = [v for v in pod.volumes if v.name == "lake"]
    assert volume.persistent_volume_claim.claim_name == "sentinel-lake"
    [mount] = [m for m in container_of(job).volume_mounts if m.name == "lake"]
    assert pod_settings.lake_root.is_relative_to(mount.mount_path)
    assert pod_settings.state_dir.is_relative_to(mount.mount_path)
    assert pod.security_context.fs_group == 10001  # the image's uid/gid (deploy/k8s/Dockerfile)
    assert job.spec.template.metadata.annotations == {
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"
    }
    assert job.spec.ttl_seconds_after_finished == 86400


def test_every_lake_hourly_step_pod_runs_execute_step_in_the_image_with_env_and_lake(
    step_jobs: dict[str, tuple[V1Job, str | None]], deployment: dict[str, Any]
) -> None:
    assert set(step_jobs) >= {"bronze_events", "silver_models", "gold_models"}
    for step, (job, namespace) in step_jobs.items():
        container = container_of(job)
        env = env_of(container)
        assert container.image == image_of(deployment), step
        assert container.args == ["dagster", "api", "execute_step"], step
        assert env["DAGSTER_RUN_STEP_KEY"] == step
        assert "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS" in env
        assert env["SENTINEL_DAGSTER_EXECUTOR"] == "k8s"
        assert env["SENTINEL_LAKE_DIR"] == "/data/lake"
        assert [m.mount_path for m in container.volume_mounts if m.name == "lake"] == ["/data"]
        assert job.spec.template.metadata.labels["app.kubernetes.io/component"] == "step_worker"
        assert job.spec.template.spec.security_context.fs_group == 10001
        assert namespace == NAMESPACE


def test_every_lake_hourly_step_pod_requests_the_step_resources_of_the_executor(
    step_jobs: dict[str, tuple[V1Job, str | None]],
) -> None:
    for step, (job, _) in step_jobs.items():
        resources = container_of(job).resources
        assert (resources.requests, resources.limits) == (
            STEP_RESOURCES["requests"],
            STEP_RESOURCES["limits"],
        ), step
