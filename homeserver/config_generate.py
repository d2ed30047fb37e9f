"""`homeserver generate-config`: a complete, commented config file, a signing key and,
when asked, a self-signed TLS certificate for the federation listener."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from importlib.resources import files
from pathlib import Path

import msgspec

from homeserver.signing_key import generate_signing_key_file


class ConfigChoices(msgspec.Struct, frozen=True):
    server_name: str
    data_directory: str
    client_listen: tuple[str, int] = ("127.0.0.1", 8008)
    federation_listen: tuple[str, int] | None = None
    public_baseurl: str | None = None
    database_url: str | None = None
    open_registration: bool = False


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to a pair; raises ValueError on anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _yaml(value: object) -> str:
    # JSON scalars are valid YAML scalars.
    return json.dumps(value)


def render_config(choices: ConfigChoices, tls_cert: str | None = None, tls_key: str | None = None) -> str:
    template = files("homeserver").joinpath("config_template.yaml").read_text()
    if choices.federation_listen is None:
        federation = "  federation: null"
    else:
        host, port = choices.federation_listen
        federation = (
            "  federation:\n"
            f"    host: {_yaml(host)}\n"
            f"    port: {port}\n"
            f"    tls_certificate_path: {_yaml(tls_cert)}\n"
            f"    tls_private_key_path: {_yaml(tls_key)}"
        )
    return template.format(
        server_name=choices.server_name,
        public_baseurl=_yaml(choices.public_baseurl),
        data_directory=choices.data_directory,
        client_host=choices.client_listen[0],
        client_port=choices.client_listen[1],
        federation_listener=federation,
        database_url=_yaml(choices.database_url),
        registration_enabled=_yaml(choices.open_registration),
        federation_enabled=_yaml(choices.federation_listen is not None),
    )


def write_self_signed_certificate(cert_path: Path, key_path: Path, server_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = server_name.rsplit(":", 1)[0] if not server_name.endswith("]") else server_name
    host = host.strip("[]")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def generate(choices: ConfigChoices, output: Path, *, self_signed_tls: bool) -> Path:
    """Write the config (and key material) and return the config's path."""
    data = Path(choices.data_directory)
    if not data.is_absolute():
        data = output.parent / data
    data.mkdir(parents=True, exist_ok=True)
    key_file = data / "signing.key"
    if not key_file.exists():
        generate_signing_key_file(key_file)
    cert = key = None
    if self_signed_tls and choices.federation_listen is not None:
        cert_path, key_path = data / "federation.crt", data / "federation.key"
        write_self_signed_certificate(cert_path, key_path, choices.server_name)
        cert, key = str(cert_path.resolve()), str(key_path.resolve())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_config(choices, cert, key))
    return output


EXAMPLE_CHOICES = ConfigChoices(
    server_name="example.org", data_directory="/var/lib/homeserver", federation_listen=("0.0.0.0", 8448)
)


def render_example() -> str:
    """config.example.yaml: the template filled with example values."""
    return render_config(EXAMPLE_CHOICES, "/var/lib/homeserver/federation.crt", "/var/lib/homeserver/federation.key")


if __name__ == "__main__":
    # python -m homeserver.config_generate > config.example.yaml
    print(render_example(), end="")
