"""`offerflow serve --workers N`: uvicorn's worker supervisor, each worker on a listening socket of
its own (SO_REUSEPORT), so the kernel spreads the connections over the workers.

uvicorn's own supervisor binds one socket and hands it to every worker; whichever worker's event
loop wakes first accepts every connection waiting in the backlog (asyncio accepts up to 100 per
wake-up), so a client that opens its keep-alive connections at once can find them all in one
worker: in one load-bench run of round 1, one worker used 3.2 s of CPU in 10 s and the other
0.01 s. Here each worker gets its own socket bound to the same address with SO_REUSEPORT; the
kernel picks the socket of a new connection by a hash of its addresses, among the sockets that
listen (a worker listens once its app has started, so nothing waits on a worker still loading).
A worker that dies is replaced by one on a new socket; the dead one's socket is closed with it.

Imported by `http_service.run_server` only (it needs uvicorn).
"""

from __future__ import annotations

import logging
import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process


def reuse_port_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to (host, port) (with SO_REUSEPORT unless `reuse_port` is False), not
    yet listening, inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ReusePortWorkers(Multiprocess):
    """uvicorn's `Multiprocess`, starting (and restarting) each worker on a new SO_REUSEPORT socket
    (see the module docstring). The parent closes its copy once the worker has started, so a
    worker's socket lives and dies with it."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, sockets=[])
        try:  # without SO_REUSEPORT: fails when anything holds the port, another server's workers too
            reuse_port_socket(config.host, config.port, reuse_port=False).close()
        except OSError as exc:  # as uvicorn: the error, exit status 3
            logging.getLogger("uvicorn.error").error(exc)
            sys.exit(STARTUP_FAILURE)
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d with %d workers, a socket each "
                                                "(SO_REUSEPORT)", config.host, config.port, config.workers)

    def _start_worker(self) -> Process:
        sock = reuse_port_socket(self.config.host, self.config.port)
        try:
            process = Process(self.config, [sock])
            process.start()  # spawn passes the descriptor to the child here
        finally:
            sock.close()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start_worker() for _ in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        """As uvicorn's: a hung or dead worker is killed and replaced (a worker that failed to start
        stops the service), the replacement on a socket of its own."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            self.processes[idx] = self._start_worker()

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced by a new one (on a new socket) once that one is ready."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start_worker()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[idx] = new
