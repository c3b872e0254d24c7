from __future__ import annotations

import json
import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import BaseCommand, CommandError

from licensing.verification import key_id, private_key_pem, public_key_b64


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a signing key, and create it private from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


class Command(BaseCommand):
    help = (
        "Vendor tool: create an Ed25519 license signing key pair. Writes KID.key (private, "
        "PEM) and KID.pub (public, base64 raw) and prints the public key and its kid."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--out-dir", default=".", help="directory for the key files")
        parser.add_argument("--kid", help="key id (default: derived from the public key)")

    def handle(self, *args: Any, **options: Any) -> None:
        out_dir = Path(options["out_dir"])
        if not out_dir.is_dir():
            raise CommandError(f"--out-dir {out_dir} is not a directory")
        private_key = Ed25519PrivateKey.generate()
        public_b64 = public_key_b64(private_key.public_key())
        kid = options["kid"] or key_id(private_key.public_key())
        if not kid.replace("-", "").replace("_", "").isalnum():
            raise CommandError(f"--kid {kid!r}: use letters, digits, '-' and '_' only")
        private_path, public_path = out_dir / f"{kid}.key", out_dir / f"{kid}.pub"
        try:
            _write_new(private_path, private_key_pem(private_key), 0o600)
            _write_new(public_path, f"{public_b64}\n".encode("ascii"), 0o644)
        except FileExistsError as exc:
            raise CommandError(f"{exc.filename} already exists; not overwriting a key") from exc
        self.stdout.write(f"kid: {kid}")
        self.stdout.write(f"public key: {public_b64}")
        self.stdout.write(f"private key file: {private_path} (keep it secret, never commit it)")
        self.stdout.write(f"public key file: {public_path}")
        self.stdout.write(f"LICENSE_PUBLIC_KEYS={json.dumps({kid: public_b64})}")
