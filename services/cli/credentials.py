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
from services.cli.context import Context, add_paging, collect_pages, next_page_note
from services.cli.errors import UsageError

DS = delivery_service_pb2
C = credentials_pb2


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "credentials", parents=[common], help="provider credentials of an app"
    )
    sub = group.add_subparsers(title="credentials commands", metavar="COMMAND", required=True)

    apns = sub.add_parser(
        "put-apns", parents=[common], help="upload an APNs .p8 key (token authentication)"
    )
    apns.add_argument("app_id")
    apns.add_argument("--key", required=True, metavar="FILE.p8", help="the .p8 private key")
    apns.add_argument("--key-id", required=True, help="the 10-character key id")
    apns.add_argument("--team-id", required=True, help="the 10-character team id")
    apns.add_argument("--bundle-id", required=True, help="the app's bundle id (apns-topic)")
    apns.add_argument("--environment", required=True, choices=sorted(inputs.ENVIRONMENTS))
    apns.set_defaults(handler=put_apns)

    cert = sub.add_parser(
        "put-apns-cert",
        parents=[common],
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
    cert.set_defaults(handler=put_apns_certificate)

    fcm = sub.add_parser("put-fcm", parents=[common], help="upload an FCM service-account key")
    fcm.add_argument("app_id")
    fcm.add_argument("--service-account", required=True, metavar="FILE.json", help="the key file")
    fcm.set_defaults(handler=put_fcm)

    web = sub.add_parser("put-webpush", parents=[common], help="upload a VAPID key pair")
    web.add_argument("app_id")
    web.add_argument(
        "--vapid-key", required=True, metavar="FILE.pem", help="the P-256 private key (PEM)"
    )
    web.add_argument("--subject", required=True, help="mailto: or https: contact")
    web.set_defaults(handler=put_webpush)

    for put in (apns, cert, fcm, web):
        put.add_argument(
            "--validate-only", action="store_true", help="check the material, store nothing"
        )

    get = sub.add_parser("get", parents=[common], help="show one credential (no secrets)")
    _slot_arguments(get)
    get.set_defaults(handler=get_credentials)

    list_ = sub.add_parser("list", parents=[common], help="list an app's credentials")
    list_.add_argument("app_id")
    add_paging(list_)
    list_.set_defaults(handler=list_credentials)

    delete = sub.add_parser("delete", parents=[common], help="delete one credential")
    _slot_arguments(delete)
    delete.set_defaults(handler=delete_credentials)


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
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
        return 0
    if args.validate_only:
        title = "Credentials valid (nothing stored)"
    else:
        title = "Credentials replaced" if answer.replaced else "Credentials stored"
    ctx.out.fields(answer.credentials, title=title)
    return 0


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
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer.credentials))
    else:
        ctx.out.fields(answer.credentials)
    return 0


def list_credentials(args: argparse.Namespace, ctx: Context) -> int:
    def fetch(token: str) -> tuple[Any, str]:
        request = DS.ListCredentialsRequest(
            app_id=args.app_id, page_size=args.page_size, page_token=token
        )
        answer = ctx.client.call("delivery", "ListCredentials", request)
        return answer.credentials, answer.next_page_token

    items, token = collect_pages(args, fetch)
    if ctx.out.json_mode:
        ctx.out.json(
            {"credentials": [formatting.to_json(c) for c in items], "next_page_token": token}
        )
        return 0
    ctx.out.table(
        ["provider", "environment", "fingerprint", "health", "expires", "last error", "updated"],
        [
            [
                formatting.enum_name(platform_pb2.Provider.DESCRIPTOR, c.provider),
                formatting.enum_name(platform_pb2.ApnsEnvironment.DESCRIPTOR, c.apns_environment),
                c.fingerprint[:16],
                formatting.enum_name(C.CredentialsHealth.DESCRIPTOR, c.health),
                formatting.timestamp(c.expire_time),
                c.last_error,
                formatting.timestamp(c.update_time),
            ]
            for c in items
        ],
    )
    next_page_note(ctx, token)
    return 0


def delete_credentials(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.call(
        "delivery", "DeleteCredentials", DS.DeleteCredentialsRequest(**_slot(args))
    )
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
    else:
        ctx.out.line(f"deleted {args.provider} credentials of {args.app_id}")
    return 0
