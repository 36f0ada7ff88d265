"""sheep's and sheepfs's command lines, parsed into the settings they run with.

The expectations were recorded from the argparse parsers these tools had
before they moved to click, on the command lines that tests, scripts,
bench, the README and Sheepdog's functional suite (common.rc and its
tests: C sheep's option spellings, hidden options included) use, plus
every option's spellings and the bad inputs. A case is the command line
and either the settings that differ from `sheep /s` (`sheepfs /mnt`), or
("exit", CODE) for usage errors (2), --help and -v (0), or ("error",
MESSAGE) for a QuietError. Relative paths are taken from /. The two
lines whose outcome changed say why.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click
import pytest

from cli import sheep, sheepfs
from cli.abbrev import expand_prefixes
from cli.daemonize import ReadyPipe, daemonize
from cli.dog.errors import QuietError as DogQuietError
from cli.errors import QuietError
from sheepblk.loglevels import LOG_LEVELS, python_level

Expected = dict[str, object] | tuple[str, object]

SHEEP_DEFAULTS: dict[str, object] = {
    "store_dir": "/s", "port": 7000, "bindaddr": "127.0.0.1", "myaddr": None, "zone": None,
    "vnodes": None, "gateway": False, "nosync": False, "cluster": "local", "foreground": False,
    "log_level": 6, "log_dir": None, "pidfile": None, "admin_from": [],
}
SHEEPFS_DEFAULTS: dict[str, object] = {
    "mountpoint": "/mnt", "address": "127.0.0.1", "port": 7000, "foreground": False,
    "allow_other": False, "debug": False, "log": None,
}

SHEEP_CASES: list[tuple[str, Expected]] = [
    ('-f -p 7100 -c local:/tmp/t/shm /tmp/t/store',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'cluster': 'local:/tmp/t/shm', 'foreground':
      True}),
    ('-f -p 7100 -c local:/tmp/t/shm -z 0 /tmp/t/store',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'zone': 0, 'cluster': 'local:/tmp/t/shm',
      'foreground': True}),
    ('-f -p 7100 -c local:/tmp/t/shm -z 2 -g /tmp/t/store',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'zone': 2, 'gateway': True, 'cluster':
      'local:/tmp/t/shm', 'foreground': True}),
    ('-f -p 7100 -c local:/tmp/t/shm -z 1 -n /tmp/t/store',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'zone': 1, 'nosync': True, 'cluster':
      'local:/tmp/t/shm', 'foreground': True}),
    ('-f -p 7100 -c local:/tmp/t/shm -z 1 /tmp/t/store,/tmp/t/d0,/tmp/t/d1',
     {'store_dir': '/tmp/t/store', 'disks': ['/tmp/t/d0', '/tmp/t/d1'], 'port': 7100, 'zone': 1,
      'cluster': 'local:/tmp/t/shm', 'foreground': True}),
    ('-f -p 7100 -c zookeeper:127.0.0.1:2181 -z 0 /tmp/t/store',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'zone': 0, 'cluster': 'zookeeper:127.0.0.1:2181',
      'foreground': True}),
    ('-f -c local:/tmp/demo/shm -z 0 -p 7000 /tmp/demo/store0',
     {'store_dir': '/tmp/demo/store0', 'zone': 0, 'cluster': 'local:/tmp/demo/shm', 'foreground':
      True}),
    ('-c local -p 7000 /tmp/sd/0', {'store_dir': '/tmp/sd/0'}),
    ('/tmp/t/store -p 7100 -c local:/tmp/t/shm',
     {'store_dir': '/tmp/t/store', 'port': 7100, 'cluster': 'local:/tmp/t/shm'}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -D',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -g',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'gateway': True, 'nosync': True,
      'cluster': 'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 2 -p 7002 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -z 1',
     {'store_dir': '/wd/0', 'port': 7002, 'myaddr': '127.0.0.1', 'zone': 1, 'nosync': True,
      'cluster': 'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -V 100',
     {'store_dir': '/wd/0', 'zone': 0, 'vnodes': 100, 'cluster': 'local:/sd/shm'}),
    # C sheep refuses a gateway with vnodes (Sheepdog's test 110).
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -g -V 42', ('exit', 1)),
    ('-V 42 -g /s', ('exit', 1)),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm',
     {'store_dir': '/wd/0', 'zone': 0, 'cluster': 'local:/sd/shm'}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -r swift,port=8000,host=127.0.0.1',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -j size=64M',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -i host=127.0.0.1,port=8000',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm', 'log_level': 7}),
    ('/wd/0,/wd/0/d0,/wd/0/d1,/wd/0/d2 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug',
     {'store_dir': '/wd/0', 'disks': ['/wd/0/d0', '/wd/0/d1', '/wd/0/d2'], 'myaddr': '127.0.0.1',
      'zone': 0, 'nosync': True, 'cluster': 'local:/sd/shm', 'log_level': 7}),
    ('/wd/0/,/wd/0/d0/,/wd/0/d1/ -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug',
     {'store_dir': '/wd/0', 'disks': ['/wd/0/d0', '/wd/0/d1'], 'myaddr': '127.0.0.1', 'zone': 0,
      'nosync': True, 'cluster': 'local:/sd/shm', 'log_level': 7}),
    ('/wd/0 -l level=debug -z 0 -p 7000 -c local:/sd/shm -y 127.0.0.1',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'cluster': 'local:/sd/shm',
      'log_level': 7}),
    ('/wd/0 -z 0 -p 7000 -c local:/sd/shm -n -y 127.0.0.1 -l level=debug -l dst=stdout',
     {'store_dir': '/wd/0', 'myaddr': '127.0.0.1', 'zone': 0, 'nosync': True, 'cluster':
      'local:/sd/shm'}),
    ('/wd/0 -p 7000', {'store_dir': '/wd/0'}),
    ('/wd/0 -p 65535', {'store_dir': '/wd/0', 'port': 65535}),
    # Ports and zones are read as C sheep reads them (str_to_u16 / u32):
    # anything else exits 1 with C's message (the parse used to let
    # out-of-range numbers through to the daemon).
    ('/wd/0 -p 0', ('exit', 1)),
    ('/wd/0 -p 65536', ('exit', 1)),
    ('/wd/0 -p 4294967297', ('exit', 1)),
    ('/wd/0 -p -1', ('exit', 1)),
    ('/wd/0 -p a', ('exit', 1)),
    ('/wd/0 -p 42a', ('exit', 1)),
    ('/wd/0 -p +', ('exit', 1)),
    ('/wd/0 -p -', ('exit', 1)),
    ('/wd/0 -p " +7002"', {'store_dir': '/wd/0', 'port': 7002}),
    ('/wd/0 -z 0', {'store_dir': '/wd/0', 'zone': 0}),
    ('/wd/0 -z 4294967295', {'store_dir': '/wd/0', 'zone': 4294967295}),
    ('/wd/0 -z 4294967296', ('exit', 1)),
    ('/wd/0 -z 9223372036854775808', ('exit', 1)),
    ('/wd/0 -z -1', ('exit', 1)),
    ('/wd/0 -z a', ('exit', 1)),
    ('/wd/0 -z 42a', ('exit', 1)),
    ('/wd/0 -z +', ('exit', 1)),
    ('/wd/0 -z -', ('exit', 1)),
    ('--port 7001 --bindaddr 0.0.0.0 --myaddr 10.0.0.1 --cluster solo --zone 3 /s',
     {'port': 7001, 'bindaddr': '0.0.0.0', 'myaddr': '10.0.0.1', 'zone': 3, 'cluster': 'solo'}),
    ('--port=7001 --bindaddr=0.0.0.0 --myaddr=10.0.0.1 --cluster=local --zone=3 /s',
     {'port': 7001, 'bindaddr': '0.0.0.0', 'myaddr': '10.0.0.1', 'zone': 3}),
    ('--gateway --foreground --nosync --pidfile /run/sheep.pid /s',
     {'gateway': True, 'nosync': True, 'foreground': True, 'pidfile': '/run/sheep.pid'}),
    ('--vnodes 7 /s', {'vnodes': 7}),
    ('--log level=3,dir=/var/log/sheep /s', {'log_level': 3, 'log_dir': '/var/log/sheep'}),
    ('--log=level=warn /s', {'log_level': 4}),
    ('--directio --wildcard-recovery --upgrade /s', {}),
    ('--ioaddr host=1.2.3.4,port=7002 --journal size=1G --wq-threads 8 --recovery max=10 --http port=8000 /s',
     {}),
    ('-D -W -u -i host=1.2.3.4 -j size=1G -w object:size=1G -R max=10 -r port=8000 /s', {}),
    ('-b 0.0.0.0 -y 10.0.0.2 -P /run/p.pid -V 1 /s',
     {'bindaddr': '0.0.0.0', 'myaddr': '10.0.0.2', 'vnodes': 1, 'pidfile': '/run/p.pid'}),
    ('-fng -p7001 -z3 /s',
     {'port': 7001, 'zone': 3, 'gateway': True, 'nosync': True, 'foreground': True}),
    ('-fp7001 /s', {'port': 7001, 'foreground': True}),
    ('-p7001 -p 7002 /s', {'port': 7002}),
    ('/s -f', {'foreground': True}),
    ('-- /s', {}),
    ('-f -- /s', {'foreground': True}),
    ('-V 3 -v 4 /s', {'vnodes': 4}),
    ('-v 4 -V 3 /s', {'vnodes': 4}),
    ('-v5 /s', {'vnodes': 5}),
    # -V as C sheep's str_to_u16 reads it: 1..65535, whole, else exit 1.
    ('-V -1 /s', ('exit', 1)),
    ('-V 0 /s', ('exit', 1)),
    ('-V 65535 /s', {'vnodes': 65535}),
    ('-V 65536 /s', ('exit', 1)),
    ('-V 4294967297 /s', ('exit', 1)),
    ('-V 42a /s', ('exit', 1)),
    ('-V + /s', ('exit', 1)),
    ('-V - /s', ('exit', 1)),
    ("-V ' +7' /s", {'vnodes': 7}),
    ('-V 1_0 /s', ('exit', 1)),
    # Bad either way; click takes -1 for an option where argparse took a number.
    ('-v -1 /s', ('exit', 2)),
    ('-v abc /s', ('exit', 2)),
    ('/s -v', ('exit', 0)),
    ('/s -v -f', ('exit', 0)),
    ('-v /s', ('exit', 2)),
    # The one difference: argparse wanted STORE_DIR here too; C sheep does not.
    ('-v', ('exit', 0)),
    ('--fore --nos --gate --z 3 --po 7005 /s',
     {'port': 7005, 'zone': 3, 'gateway': True, 'nosync': True, 'foreground': True}),
    ('--v 9 /s', {'vnodes': 9}),
    ('--log=debug /s', {'log_level': 7}),
    ('--pid /p /s', {'pidfile': '/p'}),
    ('--p 7000 /s', ('exit', 2)),
    ('--dir /s', {}),
    ('rel -P rel.pid -l dir=logs', {'store_dir': '/rel', 'log_dir': 'logs', 'pidfile': 'rel.pid'}),
    ('rel,d0,../d1', {'store_dir': '/rel', 'disks': ['/d0', '/../d1']}),
    ('-l debug /s', {'log_level': 7}),
    ('-l 3 /s', {'log_level': 3}),
    ('-l 12 /s', {'log_level': 12}),
    ('-l level=warn,dir=/logs /s', {'log_level': 4, 'log_dir': '/logs'}),
    ('-l dir=/logs /s', {'log_dir': '/logs'}),
    ('-l format=json,dst=syslog /s', {}),
    ('-l level=notice,format=server /s', {'log_level': 5}),
    ('-l emerg /s', {'log_level': 0}),
    ('-l alert /s', {'log_level': 1}),
    ('-l crit /s', {'log_level': 2}),
    ('-l err /s', {'log_level': 3}),
    ('-l error /s', {'log_level': 3}),
    ('-l warning /s', {'log_level': 4}),
    ('-l warn /s', {'log_level': 4}),
    ('-l notice /s', {'log_level': 5}),
    ('-l info /s', {}),
    ('-l level=bogus /s', ('error', "invalid log level 'bogus'")),
    ('-l foo=bar /s', ('error', "invalid log option 'foo'")),
    ("-l '' /s", {}),
    ('-l level=DEBUG /s', ('error', "invalid log level 'DEBUG'")),
    ('', ('exit', 2)),
    (',', ('error', 'no store directory given')),
    (',,', ('error', 'no store directory given')),
    ('/s /t', ('exit', 2)),
    ('-x /s', ('exit', 2)),
    ('-p', ('exit', 2)),
    ('/s -p', ('exit', 2)),
    ('--gateway=1 /s', ('exit', 2)),
    ('--bogus /s', ('exit', 2)),
    ('-z /s', ('exit', 1)),  # C: "Invalid zone id '/s'"
    ('-c', ('exit', 2)),
    ('-h', ('exit', 0)),
    ('--help', ('exit', 0)),
    ('/s -h', ('exit', 0)),
    ('--he', ('exit', 0)),
    ("''", ('error', 'no store directory given')),
    # -y is an address the other sheep dial: C's str_to_addr, no names.
    ('-y not-an-ip /s', ('error', "Invalid address: 'not-an-ip'")),
    ('-y 10.0.0.256 /s', ('error', "Invalid address: '10.0.0.256'")),
    ('-y fd00::0:7 /s', {'store_dir': '/s', 'myaddr': 'fd00::7'}),
    ("-y '' /s", {'myaddr': ''}),
    ("-c '' /s", {'cluster': ''}),
    ('/s,', {}),
    (',/s', {}),
    ('/s,/s', {}),
    # sheepblk's own: who else may administer the cluster (admission.py).
    ('--admin-from 10.1.2.0/30 /s', {'admin_from': ['10.1.2.0/30']}),
    ('--admin-from=10.1.2.1/30,fd00::/64 -b 0.0.0.0 /s',
     {'admin_from': ['10.1.2.0/30', 'fd00::/64'], 'bindaddr': '0.0.0.0'}),
    ('--admin-from 10.0.0.0/8 --admin-from 192.0.2.7,10.0.0.0/8 /s',
     {'admin_from': ['10.0.0.0/8', '192.0.2.7/32']}),
    ('--admin 10.0.0.0/8 /s', {'admin_from': ['10.0.0.0/8']}),
    ("--admin-from '' /s", {}),
    ('--admin-from 10.0.0.0/33 /s',
     ('error', "invalid --admin-from: not an IPv4 or IPv6 network: '10.0.0.0/33'")),
    ('--admin-from example.org /s',
     ('error', "invalid --admin-from: not an IPv4 or IPv6 network: 'example.org'")),
    ('--admin-from /s', ('exit', 2)),
]

SHEEPFS_CASES: list[tuple[str, Expected]] = [
    ('/mnt/sd -f -p 7100 --log /tmp/sheepfs.log',
     {'mountpoint': '/mnt/sd', 'port': 7100, 'foreground': True, 'log': '/tmp/sheepfs.log'}),
    ('/mnt/sd -p 7100', {'mountpoint': '/mnt/sd', 'port': 7100}),
    ('/mnt/sd', {'mountpoint': '/mnt/sd'}),
    ('/sd/sheepfs', {'mountpoint': '/sd/sheepfs'}),
    ('-a 10.0.0.1 -p 7001 -f -d --allow-other --log f.log /mnt',
     {'address': '10.0.0.1', 'port': 7001, 'foreground': True, 'allow_other': True, 'debug': True,
      'log': 'f.log'}),
    ('--address 10.0.0.1 --port 7001 --foreground --debug --allow-other --log /l /mnt',
     {'address': '10.0.0.1', 'port': 7001, 'foreground': True, 'allow_other': True, 'debug': True,
      'log': '/l'}),
    ('--address=10.0.0.1 --port=7001 /mnt', {'address': '10.0.0.1', 'port': 7001}),
    ('-fdp7002 /mnt', {'port': 7002, 'foreground': True, 'debug': True}),
    ('-a10.0.0.3 /mnt', {'address': '10.0.0.3'}),
    ('--addr h --allow --deb --fore --po 1 /mnt',
     {'address': 'h', 'port': 1, 'foreground': True, 'allow_other': True, 'debug': True}),
    ('--a h /mnt', ('exit', 2)),
    ('--l x /mnt', {'log': 'x'}),
    ('/mnt -p 1 -p 2', {'port': 2}),
    ('-- /mnt', {}),
    ('', ('exit', 2)),
    ('/a /b', ('exit', 2)),
    ('-p x /mnt', ('exit', 2)),
    ('-x /mnt', ('exit', 2)),
    ('--log', ('exit', 2)),
    ('-h', ('exit', 0)),
    ('--help', ('exit', 0)),
    ('--allow-other=1 /mnt', ('exit', 2)),
    ('-p -1 /mnt', {'port': -1}),
]


def _sheep(line: str) -> Expected:
    try:
        s = sheep.parse(shlex.split(line))
    except click.ClickException as e:
        return ("exit", e.exit_code)
    except QuietError as e:
        return ("error", e.message)
    if isinstance(s, int):
        return ("exit", s)
    o = s.opts
    got: dict[str, object] = {
        "store_dir": str(o.store_dir), "port": o.port, "bindaddr": o.bindaddr,
        "myaddr": o.myaddr, "zone": o.zone, "vnodes": o.vnodes, "gateway": o.gateway,
        "nosync": o.nosync, "cluster": o.cluster, "foreground": s.foreground,
        "log_level": s.log_level, "log_dir": s.log_dir, "pidfile": s.pidfile,
        "admin_from": [str(n) for n in o.admin_from],
    }
    if s.object_dirs not in ([o.store_dir / "obj"], [o.store_dir]):  # STORE/obj, or STORE named as its disk
        got["disks"] = [str(d) for d in s.object_dirs]
    return got


def _sheepfs(line: str) -> Expected:
    try:
        s = sheepfs.parse(shlex.split(line))
    except click.ClickException as e:
        return ("exit", e.exit_code)
    if isinstance(s, int):
        return ("exit", s)
    m = s.mount_options(s.mountpoint)
    assert (m.mountpoint, m.host, m.port, m.allow_other, m.debug_fuse) == \
        (s.mountpoint, s.address, s.port, s.allow_other, False)
    return {"mountpoint": s.mountpoint, "address": s.address, "port": s.port,
            "foreground": s.foreground, "allow_other": s.allow_other, "debug": s.debug,
            "log": s.log}


@pytest.mark.parametrize(("line", "expected"), SHEEP_CASES, ids=[c[0] for c in SHEEP_CASES])
def test_sheep_command_lines(line: str, expected: Expected,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    if isinstance(expected, dict):
        expected = {**SHEEP_DEFAULTS, **expected}
    assert _sheep(line) == expected


@pytest.mark.parametrize(("line", "expected"), SHEEPFS_CASES,
                         ids=[c[0] for c in SHEEPFS_CASES])
def test_sheepfs_command_lines(line: str, expected: Expected) -> None:
    if isinstance(expected, dict):
        expected = {**SHEEPFS_DEFAULTS, **expected}
    assert _sheepfs(line) == expected


def test_sheep_usage_errors_say_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert sheep.main(["-p", "x", "/s"]) == 1
    assert capsys.readouterr().err == "Invalid port number 'x'\n"
    assert sheep.main(["-z", "4294967296", "/s"]) == 1
    assert capsys.readouterr().err == ("Invalid zone id '4294967296': must be an integer "
                                       "between 0 and 4294967295\n")
    assert sheep.main(["-V", "x", "/s"]) == 1
    assert capsys.readouterr().err == ("Invalid number of vnodes 'x': must be an integer "
                                       "between 1 and 65535\n")
    assert sheep.main([]) == 2
    assert "Missing argument 'STORE_DIR[,DISK...]'" in capsys.readouterr().err
    assert sheep.main(["--p", "1", "/s"]) == 2
    assert "ambiguous option: --p could match --pidfile, --port" in capsys.readouterr().err
    assert sheep.main(["-l", "level=loud", "/s"]) == 1
    assert capsys.readouterr().err == "sheep: invalid log level 'loud'\n"


def test_sheep_refuses_bad_vnodes_with_c_sheeps_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The lines Sheepdog's test 110 expects, bare on stderr, exit 1."""
    assert sheep.main(["-V", "42a", "/s"]) == 1
    assert capsys.readouterr().err == (
        "Invalid number of vnodes '42a': must be an integer between 1 and 65535\n")
    assert sheep.main(["-g", "-V", "42", "/s"]) == 1
    assert capsys.readouterr().err == "Options '-g' and '-V' can not be both specified\n"


def test_sheep_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert sheep.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert "--foreground" in out and "--vnodes" in out and "--admin-from" in out
    # C sheep's options sheepblk ignores are accepted but not advertised.
    assert "--directio" not in out and "--journal" not in out
    assert sheep.main(["-v"]) == 0
    assert capsys.readouterr().out.startswith("sheep version ")


def test_sheepfs_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert sheepfs.main(["--help"]) == 0
    assert "--allow-other" in capsys.readouterr().out
    assert sheepfs.main([]) == 2
    assert "Missing argument 'MOUNTPOINT'" in capsys.readouterr().err


def test_sheepfs_refuses_a_missing_mount_point(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert sheepfs.main([str(tmp_path / "nowhere"), "-f"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sheepfs: ") and err.count("\n") == 1


def test_expand_prefixes() -> None:
    names = ["--port", "--pidfile", "--foreground", "--log"]
    assert expand_prefixes(["--fore", "--po=1", "--log", "-p", "--", "--fore"], names) == \
        ["--foreground", "--port=1", "--log", "-p", "--", "--fore"]
    assert expand_prefixes(["--nothing", "-fo"], names) == ["--nothing", "-fo"]
    with pytest.raises(click.UsageError, match="--p could match --pidfile, --port"):
        expand_prefixes(["--p"], names)


def test_one_quiet_error_for_all_tools() -> None:
    assert DogQuietError is QuietError
    e = QuietError("no")
    assert (e.message, e.exitcode, str(e)) == ("no", 1, "no")


def test_log_levels() -> None:
    import logging

    assert LOG_LEVELS["debug"] == 7 and LOG_LEVELS["warn"] == LOG_LEVELS["warning"] == 4
    assert [python_level(n) for n in range(9)] == [logging.ERROR] * 4 + [
        logging.WARNING, logging.INFO, logging.INFO, logging.DEBUG, logging.ERROR]


def _fork(report: str) -> int:
    """daemonize(); the child reports as `report` says and exits."""
    forked = daemonize("prog", "died quietly")
    if isinstance(forked, int):
        return forked
    try:
        if report == "ok":
            forked.ok()
        elif report == "fail":
            forked.report("no disk\n")
            forked.ok()  # a second report changes nothing
    finally:
        os._exit(0)


@pytest.mark.parametrize(("report", "code", "err"), [
    ("ok", 0, ""), ("fail", 1, "prog: no disk\n"), ("nothing", 1, "prog: died quietly\n")])
def test_daemonize_waits_for_the_report(report: str, code: int, err: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _fork(report) == code
    assert capsys.readouterr().err == err


def test_ready_pipe_reports_once() -> None:
    r, w = os.pipe()
    pipe = ReadyPipe(w)
    assert pipe.pending
    pipe.report(None)
    pipe.fail("late")
    assert not pipe.pending
    assert os.read(r, 100) == b"ok\n"
    assert os.read(r, 100) == b""
    os.close(r)


def test_the_announced_address() -> None:
    """-y, else -b, else (a wildcard -b) 127.0.0.1 for the local driver
    and, for ZooKeeper, the address this host reaches the ensemble from
    (tests/test_multihost_addresses.py checks it between hosts)."""
    from sheepblk.server.options import Options, announced_address

    def opts(**kw: object) -> Options:
        return Options(store_dir=Path("/s"), **kw)  # type: ignore[arg-type]

    assert announced_address(opts()) == "127.0.0.1"
    assert announced_address(opts(bindaddr="10.1.2.3", myaddr="10.9.9.9")) == "10.9.9.9"
    assert announced_address(opts(bindaddr="10.1.2.3")) == "10.1.2.3"
    assert announced_address(opts(bindaddr="0.0.0.0", cluster="local:/x")) == "127.0.0.1"
    for spec in ("zookeeper:127.0.0.1:2181", "zookeeper:127.0.0.1:2181,timeout=4",
                 "zookeeper:localhost:2181,127.0.0.1:2182"):
        assert announced_address(opts(bindaddr="0.0.0.0", cluster=spec)) == "127.0.0.1"
    assert announced_address(opts(bindaddr="::", cluster="zookeeper:[::1]:2181")) == "::1"
