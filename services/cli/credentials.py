"""`herald credentials put-apns|put-apns-cert|put-fcm|put-webpush|get|list|delete`
(DeliveryService).

Secret material is read from files (or `-` for stdin), never from the command line,
so it stays out of shell history and `ps`. The server never returns it; what it shows
(fingerprint, key id, project, VAPID public key, health) is safe to print.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from herald.delivery.v1 import credentials_pb2, delivery_service_pb2
from herald.type.v1 import platform_pb2
from services.cli import formatting, inputs
from services.cli.commands import add_paging, group, json_answered, list_pages, show
from services.cli.context import Context
from services.cli.errors import UsageError

DS = delivery_service_pb2
C = credentials_pb2


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    credentials = group(commands, common, "credentials", help="provider credentials of an app")

    apns = credentials.command(
        "put-apns", put_apns, help="upload an APNs .p8 key (token authentication)"
    )
    apns.add_argument("app_id")
    apns.add_argument("--key", required=True, metavar="FILE.p8", help="the .p8 private key")
    apns.add_argument("--key-id", required=True, help="the 10-character key id")
    apns.add_argument("--team-id", required=True, help="the 10-character team id")
    apns.add_argument("--bundle-id", required=True, help="the app's bundle id (apns-topic)")
    apns.add_argument("--environment", required=True, choices=sorted(inputs.ENVIRONMENTS))

    cert = credentials.command(
        "put-apns-cert",
        put_apns_certificate,
        help="upload an APNs provider certificate (certificate authentication)",
        description="Upload an APNs provider certificate and its private key: a PEM file "
        "holding both (or --key for the key apart), or a PKCS#12 bundle (--p12, its "
        "password from --password-file). Delivery reports when it expires "
        "(credentials list, the herald_delivery_credentials_expiry_seconds metric).",
    )
    cert.add_argument("app_id")
    source = cert.add_mutually_exclusive_group(required=True)
    source.add_argument("--cert", metavar="FILE.pem", help="the certificate (PEM)")
    source.add_argument("--p12", metavar="FILE.p12", help="a PKCS#12 bundle")
    cert.add_argument("--key", metavar="FILE.pem", help="its private key, if not in --cert")
    cert.add_argument("--password-file", metavar="FILE", help="the --p12 bundle's password")
    cert.add_argument("--bundle-id", required=True, help="the app's bundle id (apns-topic)")
    cert.add_argument("--environment", required=True, choices=sorted(inputs.ENVIRONMENTS))

    fcm = credentials.command("put-fcm", put_fcm, help="upload an FCM service-account key")
    fcm.add_argument("app_id")
    fcm.add_argument("--service-account", required=True, metavar="FILE.json", help="the key file")

    web = credentials.command("put-webpush", put_webpush, help="upload a VAPID key pair")
    web.add_argument("app_id")
    web.add_argument(
        "--vapid-key", required=True, metavar="FILE.pem", help="the P-256 private key (PEM)"
    )
    web.add_argument("--subject", required=True, help="mailto: or https: contact")

    for put in (apns, cert, fcm, web):
        put.add_argument(
            "--validate-only", action="store_true", help="check the material, store nothing"
        )

    _slot_arguments(
        credentials.command("get", get_credentials, help="show one credential (no secrets)")
    )

    list_ = credentials.command("list", list_credentials, help="list an app's credentials")
    list_.add_argument("app_id")
    add_paging(list_)

    _slot_arguments(credentials.command("delete", delete_credentials, help="delete one credential"))


def _slot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app_id")
    parser.add_argument("--provider", required=True, choices=sorted(inputs.PROVIDERS))
    parser.add_argument(
        "--environment", choices=sorted(inputs.ENVIRONMENTS), help="required for apns"
    )


def _slot(args: argparse.Namespace) -> dict[str, Any]:
    if args.provider == "apns" and not args.environment:
        raise UsageError("--environment is required with --provider apns")
    slot: dict[str, Any] = {"app_id": args.app_id, "provider": inputs.PROVIDERS[args.provider]}
    if args.environment:
        slot["apns_environment"] = inputs.ENVIRONMENTS[args.environment]
    return slot


def _put(args: argparse.Namespace, ctx: Context, credentials: C.Credentials) -> int:
    request = DS.PutCredentialsRequest(credentials=credentials, validate_only=args.validate_only)
    answer = ctx.client.call("delivery", "PutCredentials", request)
    if args.validate_only:
        title = "Credentials valid (nothing stored)"
    else:
        title = "Credentials replaced" if answer.replaced else "Credentials stored"
    return show(ctx, answer.credentials, title, answer=answer)


def put_apns(args: argparse.Namespace, ctx: Context) -> int:
    auth = C.ApnsTokenAuth(
        private_key_pem=inputs.read_text(args.key, "APNs key"),
        key_id=args.key_id,
        team_id=args.team_id,
        bundle_id=args.bundle_id,
        environment=inputs.ENVIRONMENTS[args.environment],
    )
    return _put(args, ctx, C.Credentials(app_id=args.app_id, apns_token=auth))


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


def _pem_blocks(text: str) -> tuple[str, str]:
    """A PEM file's certificate blocks (the chain, in order) and its private key."""
    certificates, keys = [], []
    for block in _PEM_BLOCK.finditer(text):
        kind = block.group(1)
        if kind == "CERTIFICATE":
            certificates.append(block.group(0))
        elif kind.endswith("PRIVATE KEY"):
            keys.append(block.group(0))
    return "\n".join(certificates), keys[0] if keys else ""


def put_apns_certificate(args: argparse.Namespace, ctx: Context) -> int:
    auth = C.ApnsCertificateAuth(
        bundle_id=args.bundle_id, environment=inputs.ENVIRONMENTS[args.environment]
    )
    if args.p12:
        if args.key:
            raise UsageError("--key goes with --cert; a --p12 bundle holds its key")
        auth.pkcs12.data = inputs.read_bytes(args.p12, "PKCS#12 bundle")
        if args.password_file:
            password = inputs.read_text(args.password_file, "password file")
            auth.pkcs12.password = password.rstrip("\r\n")
    else:
        if args.password_file:
            raise UsageError("--password-file goes with --p12")
        certificate, key = _pem_blocks(inputs.read_text(args.cert, "certificate"))
        if args.key:
            key = _pem_blocks(inputs.read_text(args.key, "private key"))[1]
        if not certificate:
            raise UsageError(f"{args.cert} holds no PEM certificate")
        if not key:
            raise UsageError("no PEM private key: give --key, or a --cert file holding the key too")
        auth.pem.certificate_pem = certificate
        auth.pem.private_key_pem = key
    return _put(args, ctx, C.Credentials(app_id=args.app_id, apns_certificate=auth))


def put_fcm(args: argparse.Namespace, ctx: Context) -> int:
    account = C.FcmServiceAccount(
        service_account_json=inputs.read_text(args.service_account, "service-account file")
    )
    return _put(args, ctx, C.Credentials(app_id=args.app_id, fcm=account))


def put_webpush(args: argparse.Namespace, ctx: Context) -> int:
    vapid = C.WebPushVapid(
        private_key=inputs.read_text(args.vapid_key, "VAPID key"), subject=args.subject
    )
    return _put(args, ctx, C.Credentials(app_id=args.app_id, web_push=vapid))


def get_credentials(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.call("delivery", "GetCredentials", DS.GetCredentialsRequest(**_slot(args)))
    return show(ctx, answer.credentials)


def list_credentials(args: argparse.Namespace, ctx: Context) -> int:
    return list_pages(
        args,
        ctx,
        "delivery",
        "ListCredentials",
        DS.ListCredentialsRequest(app_id=args.app_id),
        "credentials",
        ["provider", "environment", "fingerprint", "health", "expires", "last error", "updated"],
        lambda c: [
            formatting.enum_name(platform_pb2.Provider.DESCRIPTOR, c.provider),
            formatting.enum_name(platform_pb2.ApnsEnvironment.DESCRIPTOR, c.apns_environment),
            c.fingerprint[:16],
            formatting.enum_name(C.CredentialsHealth.DESCRIPTOR, c.health),
            formatting.timestamp(c.expire_time),
            c.last_error,
            formatting.timestamp(c.update_time),
        ],
    )


def delete_credentials(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.call(
        "delivery", "DeleteCredentials", DS.DeleteCredentialsRequest(**_slot(args))
    )
    if not json_answered(ctx, answer):
        ctx.out.line(f"deleted {args.provider} credentials of {args.app_id}")
    return 0
