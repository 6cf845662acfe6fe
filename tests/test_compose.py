"""docker-compose.yml and the images' files, checked without a Docker engine.

`make lint-deploy` validates the file against the Compose specification's
schema and lints the Dockerfiles. These tests check what the schema cannot,
such as the services' wiring, defaults and the nginx template's variables.
"""

import ipaddress
import re
import subprocess

import pytest
import yaml

from .servers import PYTHON, ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
TEMPLATE_VARIABLES = {
    "LISTEN_PORT",
    "STATIC_ROOT",
    "PRODUCER_HOST",
    "PRODUCER_PORT",
    "RESOLVER",
}
# ${NAME}, ${NAME:-default} or ${NAME-default}, but not $${NAME} (a literal $).
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?-)([^}]*))?\}")


def interpolate(value: str) -> str:
    """Substitute each variable with its default, as Compose does without a .env."""
    return INTERPOLATION.sub(lambda match: match.group(3) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_every_variable_has_a_default():
    text = COMPOSE_FILE.read_text()
    variables = INTERPOLATION.findall(text)
    assert variables
    assert [name for name, operator, _ in variables if operator != ":-"] == []


def test_services(services):
    assert set(services) == {
        "redis",
        "postgres",
        "migrate",
        "producer",
        "word_worker",
        "shared_init",
        "consumer_nginx",
        "consumer_node",
    }


def test_producer_can_be_scaled(services):
    producer = services["producer"]
    assert "container_name" not in producer
    assert "ports" not in producer
    assert producer["expose"] == ["8000"]
    assert producer["healthcheck"]["test"][-1] == (
        "import urllib.request; "
        "urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"
    )


def test_start_order(services):
    def conditions(name: str) -> dict[str, str]:
        depends_on = services[name].get("depends_on", {})
        return {service: spec["condition"] for service, spec in depends_on.items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("producer") == {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert conditions("word_worker") == conditions("producer")
    for consumer in ("consumer_nginx", "consumer_node"):
        assert conditions(consumer) == {"shared_init": "service_completed_successfully"}


def test_restart_policies(services):
    one_shots = {"migrate", "shared_init"}
    for name, service in services.items():
        expected = "no" if name in one_shots else "unless-stopped"
        assert service["restart"] == expected, name


def test_healthchecks(services):
    for name in ("redis", "postgres", "producer", "consumer_nginx", "consumer_node"):
        assert services[name]["healthcheck"]["test"], name


def test_producer_environment(services):
    environment = {
        key: interpolate(value)
        for key, value in services["producer"]["environment"].items()
    }
    assert environment["DJANGO_DEBUG"] == "0"
    assert environment["IN_PROCESS_WORD_SOURCE"] == "0"
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["DATABASE_URL"] == (
        "postgres://wordstream:wordstream@postgres:5432/wordstream"
    )
    # The Host the proxies pass on is the browser's: localhost:3000 and
    # localhost:3001 from the host machine.
    allowed = environment["DJANGO_ALLOWED_HOSTS"].split(",")
    assert {"localhost", "127.0.0.1", "[::1]", "producer"} <= set(allowed)
    for name in ("migrate", "word_worker"):
        assert services[name]["environment"] == services["producer"]["environment"]


def test_trusted_proxies_are_the_network(compose, services):
    environment = services["producer"]["environment"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert environment["TRUSTED_PROXIES"] == subnet
    assert ipaddress.ip_network(interpolate(subnet)).prefixlen == 24


def test_consumer_ports_and_volumes(services):
    nginx = services["consumer_nginx"]
    node = services["consumer_node"]
    assert nginx["ports"] == ["${NGINX_PORT:-3000}:80"]
    assert node["ports"] == ["${NODE_PORT:-3001}:3001"]
    assert nginx["volumes"] == ["shared_web:/usr/share/nginx/html:ro"]
    assert node["volumes"] == ["shared_web:/app/public:ro"]
    assert services["shared_init"]["volumes"] == [
        "./shared:/src:ro",
        "shared_web:/dest",
    ]


def test_build_contexts_have_dockerfiles(services):
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), name


def test_template_variables_are_substituted_everywhere():
    template = (ROOT / "docker/nginx/wordstream.conf.template").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == TEMPLATE_VARIABLES
    dockerfile = (ROOT / "docker/nginx/Dockerfile").read_text()
    image_filter = re.search(r'NGINX_ENVSUBST_FILTER="\^\(([\w|]+)\)\$"', dockerfile)
    assert set(image_filter.group(1).split("|")) == TEMPLATE_VARIABLES
    run_script = (ROOT / "docker/nginx/run.sh").read_text()
    native = re.search(r"envsubst '([^']+)'", run_script).group(1)
    assert set(re.findall(r"\$\{(\w+)\}", native)) == TEMPLATE_VARIABLES


def test_schema_check_rejects_unknown_key(tmp_path):
    """The schema check in `make lint-deploy` fails on a misspelt key."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    broken.write_text(text.replace("    expose:", "    exposes:", 1))
    command = [
        PYTHON,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
    ]
    valid = subprocess.run([*command, str(COMPOSE_FILE)], capture_output=True)
    invalid = subprocess.run([*command, str(broken)], capture_output=True, text=True)
    assert valid.returncode == 0
    assert invalid.returncode == 1
    assert "'exposes' was unexpected" in invalid.stdout
