"""What the lab serves in place of GitHub releases and update.k3s.io: installer, binaries, channels.

- ``GET /k3s/install.sh``                         the installer (used like ``https://get.k3s.io``)
- ``GET /k3s/releases/download/<version>/k3s``    a stand-in binary, for air-gapped installs
- ``GET /v1-release/channels[/<name>]``           release channels, as update.k3s.io answers
- ``PUT /v1-release/channels``                    (lab only) publish newer versions: ``{name: version}``
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from k3s_deploy_lab.guests.k3s import scripts
from k3s_deploy_lab.guests.k3s.flags import VERSION_RE


def add_release_routes(app: web.Application, base_url: Callable[[], str], channels: dict[str, str]) -> None:
    """Register the routes; ``base_url`` gives the server's own URL once it listens; ``channels``
    (name -> latest version) is live: ``PUT /v1-release/channels`` with a JSON map updates it, so a test
    or a demo can publish a newer release."""

    async def _installer(request: web.Request) -> web.Response:
        return web.Response(text=scripts.install_sh(base_url()), content_type="text/x-shellscript")

    async def _binary(request: web.Request) -> web.Response:
        """The stand-in ``k3s`` binary of a release, for air-gapped installs (INSTALL_K3S_SKIP_DOWNLOAD)."""
        version = request.match_info["version"]
        if not VERSION_RE.match(version):
            return web.Response(status=404, text="Not Found")
        return web.Response(text=scripts.k3s_bin(version, ""), content_type="application/octet-stream")

    async def _channels(request: web.Request) -> web.Response:
        base = f"{base_url()}/v1-release/channels"
        data = [
            {
                "id": name,
                "type": "channel",
                "links": {"self": f"{base}/{name}"},
                "name": name,
                "latest": version,
            }
            for name, version in channels.items()
        ]
        return web.json_response(
            {
                "type": "collection",
                "links": {"self": base},
                "actions": {},
                "data": data,
                "resourceType": "channel",
            }
        )

    async def _channel(request: web.Request) -> web.Response:
        version = channels.get(request.match_info["name"])
        if version is None:
            return web.json_response({"type": "error", "status": "404", "message": "not found"}, status=404)
        raise web.HTTPFound(f"https://github.com/k3s-io/k3s/releases/tag/{version}")

    async def _publish(request: web.Request) -> web.Response:
        update = await request.json()
        if not isinstance(update, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and VERSION_RE.match(v) for k, v in update.items()
        ):
            return web.json_response(
                {"message": "expected a JSON map of channel name -> K3s version"}, status=400
            )
        channels.update(update)
        return web.json_response(dict(channels))

    app.router.add_get("/k3s/install.sh", _installer)
    app.router.add_put("/v1-release/channels", _publish)
    app.router.add_get("/k3s/releases/download/{version}/k3s", _binary)
    app.router.add_get("/v1-release/channels", _channels)
    app.router.add_get("/v1-release/channels/{name}", _channel)
