"""A small Hub-compatible HTTP server on 127.0.0.1 for the tests: in memory, honest, with hooks for failures.

It speaks the part of the Hub API that ``create_repo``, ``create_commit``/``upload_folder`` (plain LFS, no Xet),
``list_repo_tree`` and ``load_dataset`` (also streaming) use, stores exactly the bytes it is sent and serves them
back. Commits are atomic: the branch head moves only once a whole commit request has been read and checked.

Hooks for tests: ``drop_commits`` (read a commit request, then close the connection without answering),
``fail_next`` (answer the next N matching requests with 503), ``tamper`` (replace a file's bytes in place),
``requests`` (every method and path served). ``TOKEN`` is user ``tester``'s, member of ``aclorg``; any other
token gets 401, a write to another namespace 403.

Example:
    >>> with HubServer() as hub:                                  # doctest: +SKIP
    ...     env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from hub_store import Blob, Repo, git_sha1, is_utf8

TOKEN = "hf_aclbuildTESTtoken0123456789abcdef"
USERS = {TOKEN: ("tester", {"tester", "aclorg"})}
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
DATE = "2026-01-01T00:00:00.000Z"  # every timestamp the server reports


class HubServer:
    """The server; ``with HubServer() as hub:`` starts it on a free port and stops it."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop_commits = False
        self.fail_next: dict[str, int] = {}  # path regex -> how many 503s still to answer
        self.lock = threading.Lock()
        self._count = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> HubServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """Path -> bytes of a repo at a branch or commit."""
        repo = self.repos[repo_id]
        return {p: b.data for p, b in repo.commits[repo.resolve(rev)].items()}

    def head(self, repo_id: str, rev: str = "main") -> str:
        return self.repos[repo_id].branches[rev]

    def commit_count(self, repo_id: str) -> int:
        return len(self.repos[repo_id].commits)

    def tamper(self, repo_id: str, path: str, data: bytes, rev: str = "main") -> None:
        """Replace a file's bytes in place, without a commit: a remote corrupted behind the repo's back."""
        repo = self.repos[repo_id]
        files = repo.commits[repo.resolve(rev)]
        files[path] = Blob(data, files[path].lfs)

    def new_commit(self, repo: Repo, files: dict[str, Blob], message: str) -> str:
        self._count += 1
        oid = hashlib.sha1(f"{repo.repo_id}\0{self._count}\0{message}".encode()).hexdigest()
        repo.commits[oid] = files
        return oid


def card_data(readme: Blob | None) -> dict:
    """``cardData`` as the Hub's repo info carries it: the README's YAML front matter (none without one)."""
    import yaml

    text = readme.data.decode("utf-8", "replace") if readme is not None else ""
    if not text.startswith("---"):
        return {}
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return {}
    return {"cardData": data} if isinstance(data, dict) else {}


def _handler_for(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        # -- plumbing -------------------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            self._send(status, {"error": message}, headers)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _user(self) -> tuple[str, set[str]] | None | bool:
            """(name, namespaces) for a known token, None without a token, False for a refused one."""
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return None
            return USERS.get(auth[len("Bearer ") :], False)

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            with hub.lock:
                hub.requests.append((self.command, path))
                for pattern, left in hub.fail_next.items():
                    if left and re.search(pattern, path):
                        hub.fail_next[pattern] = left - 1
                        self._body()
                        return self._error(503, "service unavailable (test hook)")
            user = self._user()
            if user is False:
                self._body()
                return self._error(401, "Invalid credentials in Authorization header")
            for method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and method == self.command:
                    with hub.lock:
                        return handler(self, user, query, *(g if g is None else unquote(g) for g in match.groups()))
            self._body()
            self._error(404, f"no route for {self.command} {path}")

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        # -- access ---------------------------------------------------------------------------------------------
        def _repo(self, user, repo_id: str, write: bool = False) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and (user is None or repo_id.split("/")[0] not in user[1])):
                self._error(404 if user else 401, f"Repository {repo_id} not found", "RepoNotFound")
                return None
            if write and user is None:
                self._error(401, "You must be authenticated to write")
                return None
            if write and repo_id.split("/")[0] not in user[1]:
                self._error(403, f"You don't have the rights to write to {repo_id}")
                return None
            return repo

        def _files(self, repo: Repo, rev: str) -> tuple[str, dict[str, Blob]] | None:
            oid = repo.resolve(rev)
            if oid is None:
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return None
            return oid, repo.commits[oid]

        # -- repos ----------------------------------------------------------------------------------------------
        def post_create(self, user, query) -> None:
            payload = json.loads(self._body())
            if user is None:
                return self._error(401, "You must be authenticated to create a repository")
            namespace = payload.get("organization") or user[0]
            repo_id = f"{namespace}/{payload['name']}"
            if namespace not in user[1]:
                return self._error(
                    403, f"You don't have the rights to create a dataset under the namespace {namespace}"
                )
            if repo_id in hub.repos:
                return self._send(
                    409, {"error": "You already created this dataset repo", "url": f"{hub.url}/datasets/{repo_id}"}
                )
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = hub.repos[repo_id] = Repo(repo_id, private)
            repo.branches["main"] = hub.new_commit(
                repo, {".gitattributes": Blob(GITATTRIBUTES, False)}, "initial commit"
            )
            self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})

        def post_validate_yaml(self, user, query) -> None:
            self._body()
            self._send(200, {"errors": [], "warnings": []})

        def get_info(self, user, query, repo_id: str, rev: str | None = None) -> None:
            repo = self._repo(user, repo_id)
            found = repo and self._files(repo, rev or "main")
            if not found:
                return
            oid, files = found
            siblings = [
                {"rfilename": p, "size": len(b.data), "blobId": b.entry(p)["oid"]} for p, b in sorted(files.items())
            ]
            self._send(200, {"id": repo_id, "author": repo_id.split("/")[0], "sha": oid, "private": repo.private,
                             "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                             "siblings": siblings, "lastModified": DATE, "createdAt": DATE,
                             **card_data(files.get("README.md"))})  # fmt: skip

        def post_branch(self, user, query, repo_id: str, branch: str) -> None:
            payload = json.loads(self._body() or b"{}")
            repo = self._repo(user, repo_id, write=True)
            if not repo:
                return
            if branch in repo.branches:
                return self._error(409, f"Branch {branch} already exists")
            found = self._files(repo, payload.get("startingPoint") or "main")
            if found:
                repo.branches[branch] = found[0]
                self._send(200, {})

        # -- reading files --------------------------------------------------------------------------------------
        def get_tree(self, user, query, repo_id: str, rev: str, sub: str | None = None) -> None:
            repo = self._repo(user, repo_id)
            found = repo and self._files(repo, rev)
            if not found:
                return
            _, files = found
            prefix = f"{sub.strip('/')}/" if sub else ""
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries: dict[str, dict] = {}
            for path, blob in sorted(files.items()):
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix) :].split("/")
                for depth in range(1, len(parts)):
                    folder = prefix + "/".join(parts[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(
                            folder, {"type": "directory", "path": folder, "size": 0, "oid": git_sha1(folder.encode())}
                        )
                if recursive or len(parts) == 1:
                    entries[path] = blob.entry(path)
            if sub and not entries:
                return self._error(404, f"{sub} does not exist", "EntryNotFound")
            if query.get("expand", ["false"])[0].lower() == "true":  # old HfFileSystem asks for it; the head stands in
                for entry in entries.values():
                    entry["lastCommit"] = {"id": found[0], "title": "commit", "date": DATE}
            self._send(200, list(entries.values()))

        def post_paths_info(self, user, query, repo_id: str, rev: str) -> None:
            form = parse_qs(self._body().decode())
            repo = self._repo(user, repo_id)
            found = repo and self._files(repo, rev)
            if not found:
                return
            _, files = found
            out = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in files:
                    out.append(files[path].entry(path))
                elif any(p.startswith(path + "/") for p in files):
                    out.append({"type": "directory", "path": path, "size": 0, "oid": git_sha1(path.encode())})
            self._send(200, out)

        def get_resolve(self, user, query, repo_id: str, rev: str, path: str) -> None:
            repo = self._repo(user, repo_id)
            found = repo and self._files(repo, rev)
            if not found:
                return
            oid, files = found
            blob = files.get(path)
            if blob is None:
                return self._error(404, f"{path} does not exist", "EntryNotFound")
            headers = {"X-Repo-Commit": oid, "ETag": f'"{blob.etag()}"', "Accept-Ranges": "bytes"}
            if blob.lfs:
                headers.update({"X-Linked-Etag": f'"{blob.etag()}"', "X-Linked-Size": len(blob.data)})
            data, status = blob.data, 200
            ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                size = len(data)
                start = int(ranged[1]) if ranged[1] else max(0, size - int(ranged[2]))
                end = min(int(ranged[2]), size - 1) if ranged[1] and ranged[2] else size - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                data, status = data[start : end + 1], 206
            self._send(status, data, headers)

        # -- writing --------------------------------------------------------------------------------------------
        def post_preupload(self, user, query, repo_id: str, rev: str) -> None:
            payload = json.loads(self._body())
            repo = self._repo(user, repo_id, write=True)
            found = repo and self._files(repo, rev)
            if not found:
                return
            _, files = found
            out = []
            for f in payload["files"]:
                sample = base64.b64decode(f["sample"])
                lfs = f["size"] > 10 * 2**20 or b"\0" in sample or not is_utf8(sample)
                remote = files.get(f["path"])
                oid = remote and (hashlib.sha256(remote.data).hexdigest() if lfs else git_sha1(remote.data))
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})  # fmt: skip
            self._send(200, {"files": out, "commitOid": found[0]})

        def post_lfs_batch(self, user, query, repo_id: str) -> None:
            payload = json.loads(self._body())
            if not self._repo(user, repo_id, write=True):
                return
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/_lfs/{obj['oid']}", "header": {}}}
                objects.append(entry)
            self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

        def put_lfs_upload(self, user, query, oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "uploaded bytes do not match their sha256")
            hub.lfs[oid] = data
            self._send(200, b"")

        def post_commit(self, user, query, repo_id: str, rev: str) -> None:
            body = self._body()
            if hub.drop_commits:
                self.close_connection = True  # the request was read; no answer ever comes
                return
            repo = self._repo(user, repo_id, write=True)
            found = repo and self._files(repo, rev)
            if not found:
                return
            head, files = found
            files = dict(files)
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            if header.get("parentCommit") and not head.startswith(header["parentCommit"]):
                return self._error(412, f"A commit has happened since {header['parentCommit']}; head is {head}")
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        return self._error(422, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = Blob(hub.lfs[value["oid"]], True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            oid = hub.new_commit(repo, files, header["summary"])
            pr_url = None
            if query.get("create_pr", ["0"])[0] in ("1", "true"):
                number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
                repo.branches[f"refs/pr/{number}"] = oid
                pr_url = f"{hub.url}/datasets/{repo_id}/discussions/{number}"
            else:
                repo.branches[rev] = oid
            self._send(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                             "pullRequestUrl": pr_url, "success": True})  # fmt: skip

    repo = r"/api/datasets/([^/]+/[^/]+)"
    ROUTES = [
        ("POST", r"/api/repos/create", Handler.post_create),
        ("POST", r"/api/validate-yaml", Handler.post_validate_yaml),
        ("GET", repo, Handler.get_info),
        ("GET", repo + r"/revision/([^/]+)", Handler.get_info),
        ("POST", repo + r"/branch/([^/]+)", Handler.post_branch),
        ("GET", repo + r"/tree/([^/]+)(?:/(.*))?", Handler.get_tree),
        ("POST", repo + r"/paths-info/([^/]+)", Handler.post_paths_info),
        ("POST", repo + r"/preupload/([^/]+)", Handler.post_preupload),
        ("POST", repo + r"/commit/([^/]+)", Handler.post_commit),
        ("POST", r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", Handler.post_lfs_batch),
        ("PUT", r"/_lfs/([0-9a-f]{64})", Handler.put_lfs_upload),
        ("GET", r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", Handler.get_resolve),
        ("HEAD", r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", Handler.get_resolve),
    ]
    return Handler
