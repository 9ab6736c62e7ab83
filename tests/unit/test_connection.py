"""A dead SSH connection becomes an error pyinfra fails one host with (backhaul/connection.py)."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import ConnectError

from backhaul import connection


class Transport:
    def __init__(self, active: bool):
        self.active = active

    def is_active(self) -> bool:
        return self.active


class Client:
    def __init__(self, active: bool):
        self.transport = Transport(active)

    def get_transport(self):
        return self.transport


class DeadTransportConnector:
    """What pyinfra's SSH connector does once the host rebooted under the run: paramiko's
    transport raises a bare EOFError at the next command, an upload's SFTP channel pyinfra's
    ConnectError."""

    def __init__(self, active: bool = False):
        self.calls = 0
        self.client = Client(active)

    def run_shell_command(self, *args, **kwargs):
        self.calls += 1
        raise EOFError()

    def put_file(self, *args, **kwargs):
        raise ConnectError("Unable to establish SFTP connection. Check that the SFTP subsystem ...")

    def get_file(self, *args, **kwargs):
        return True


class Host:
    def __init__(self, name, active: bool = False):
        self.name = name
        self.connector = DeadTransportConnector(active)


def test_a_dead_connection_is_an_os_error_naming_the_host():
    host = Host("backend-1")
    connection.fail_alone_when_lost(host)
    for call in (host.connector.run_shell_command, host.connector.put_file):
        with pytest.raises(OSError) as info:  # pyinfra fails the host on OSError
            call("true")
        assert isinstance(info.value, connection.LostConnection)
        assert "backend-1" in str(info.value) and "inv deploy" in str(info.value)
    assert host.connector.get_file("x") is True  # what works is left alone


def test_guarding_twice_wraps_once():
    host = Host("proxy")
    connection.fail_alone_when_lost(host)
    connection.fail_alone_when_lost(host)
    with pytest.raises(connection.LostConnection):
        host.connector.run_shell_command("true")
    assert host.connector.calls == 1


def test_an_error_on_a_live_connection_stays_what_it_is():
    host = Host("backend-2", active=True)
    connection.fail_alone_when_lost(host)
    with pytest.raises(ConnectError):
        host.connector.put_file("x", "/y")


class ShortUploadConnector:
    """What pyinfra's SSH connector does when the host's disk is full where a file goes: the
    SFTP writes fail unreported and paramiko finds the file short afterwards."""

    def __init__(self):
        self.client = Client(True)

    def put_file(self, filename_or_io, remote_filename, *args, **kwargs):
        raise OSError("size mismatch in put!  0 != 602")


def test_an_upload_that_stopped_short_names_the_full_disk_and_what_to_do():
    host = Host("proxy", active=True)
    host.connector = ShortUploadConnector()
    connection.fail_alone_when_lost(host)
    with pytest.raises(OSError) as info:  # pyinfra fails the host on OSError
        host.connector.put_file("x", "/etc/wireguard/.wg0.conf.upload")
    assert isinstance(info.value, connection.DiskFull)
    message = str(info.value)
    assert "proxy" in message and "0 of 602 bytes" in message
    assert "disk is full where /etc/wireguard is" in message and "inv deploy again" in message


def test_a_short_upload_is_named_a_full_disk_under_another_layers_wrapper():
    """Another layer may wrap the connector's methods first (backhaul/readlog.py records what a
    deploy runs): a short upload is still told apart by which method it was, not by the name
    of whatever wraps it. (Seen in the lab: 'size mismatch in put!' reached the user.)"""
    host = Host("proxy", active=True)
    host.connector = ShortUploadConnector()
    real = host.connector.put_file
    host.connector.put_file = lambda *args, **kwargs: real(*args, **kwargs)
    connection.fail_alone_when_lost(host)
    with pytest.raises(connection.DiskFull):
        host.connector.put_file("x", "/etc/wireguard/.wg0.conf.upload")
