"""Config validation: the shipped files load; every kind of bad file names its field."""
import copy
from pathlib import Path

import pytest
import yaml

from ftcp.common import config
from ftcp.common.config import ConfigError, PortRef

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "switch": {"dpid": 1},
    "services": [{
        "name": "web", "address": "10.0.0.10", "port": 80,
        "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
        "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4, "mirror_port": "5",
                     "mac": "00:00:00:00:00:20"}],
    }],
    "redis": {"url": "unix:///run/ftcp/redis.sock"},
}


def bad(mutate):
    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    return err.value


def test_good_config_parses_to_typed_tree():
    conf = config.parse(GOOD)
    svc = conf.services[0]
    assert (svc.name, svc.address, svc.port) == ("web", "10.0.0.10", 80)
    assert svc.primary.port == PortRef(name="s1-eth3")
    assert svc.backups[0].data_port == PortRef(number=4)
    assert svc.backups[0].mirror_port == PortRef(number=5)  # "5" is a number given as a string
    assert conf.dpid == 1 and conf.redis_url == "unix:///run/ftcp/redis.sock"
    assert conf.service("web") is svc and conf.service("nope") is None


def test_defaults():
    data = copy.deepcopy(GOOD)
    del data["switch"], data["redis"]
    conf = config.parse(data)
    assert conf.dpid is None and conf.redis_url == config.DEFAULT_REDIS_URL
    assert conf.services[0].divergence == "strict"


def test_divergence_is_read_and_written_back():
    data = copy.deepcopy(GOOD)
    data["services"][0]["divergence"] = "aligned"
    svc = config.parse(data).services[0]
    assert svc.divergence == "aligned" and svc.to_dict()["divergence"] == "aligned"


@pytest.mark.parametrize("path", ["switch_config/services.yaml", "switch_config/services-lab.yaml"])
def test_shipped_files_load(path):
    conf = config.load(ROOT / path)
    assert conf.services and conf.source.endswith(path)


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d.pop("services"), "services", "is required"),
    (lambda d: d.update(services=[]), "services", "non-empty list"),
    (lambda d: d.update(extra=1), "extra", "unknown field"),
    (lambda d: d["services"][0].update(prot=80), "services[0].prot", "unknown field"),
    (lambda d: d["services"][0].pop("address"), "services[0].address", "is required"),
    (lambda d: d["services"][0].update(address="10.0.0.300"), "services[0].address", "IPv4 address"),
    (lambda d: d["services"][0].update(address="224.0.0.1"), "services[0].address", "unicast"),
    (lambda d: d["services"][0].update(address=10), "services[0].address", "IPv4 address"),
    (lambda d: d["services"][0].update(port=0), "services[0].port", "TCP port"),
    (lambda d: d["services"][0].update(port=65536), "services[0].port", "TCP port"),
    (lambda d: d["services"][0].update(port="80"), "services[0].port", "TCP port"),
    (lambda d: d["services"][0].update(port=True), "services[0].port", "TCP port"),
    (lambda d: d["services"][0].update(name="bad name!"), "services[0].name", "letters, digits"),
    (lambda d: d["services"][0].update(name=""), "services[0].name", "letters, digits"),
    (lambda d: d["services"][0].update(name="web\n"), "services[0].name", "letters, digits"),
    (lambda d: d["services"][0].update(primary="s1-eth3"), "services[0].primary", "must be a mapping"),
    (lambda d: d["services"][0]["primary"].update(port=0), "services[0].primary.port", "switch port"),
    (lambda d: d["services"][0]["primary"].update(port=0xFFFFFFFD), "services[0].primary.port", "switch port"),
    (lambda d: d["services"][0]["primary"].update(port=[3]), "services[0].primary.port", "switch port"),
    (lambda d: d["services"][0]["primary"].update(mac="00:11"), "services[0].primary.mac", "MAC address"),
    (lambda d: d["services"][0]["primary"].update(mac="00:00:00:00:00:0a\n"), "services[0].primary.mac",
     "MAC address"),
    (lambda d: d["services"][0].update(backups=[]), "services[0].backups", "non-empty list"),
    (lambda d: d["services"][0].update(backups={"name": "b1"}), "services[0].backups", "non-empty list"),
    (lambda d: d["services"][0]["backups"][0].pop("mirror_port"), "services[0].backups[0].mirror_port", "is required"),
    (lambda d: d["services"][0]["backups"][0].update(mirror_port=4), "services[0].backups[0].mirror_port",
     "must differ from data_port"),
    (lambda d: d["services"][0]["backups"][0].update(data_port="s1-eth3"), "services[0].backups[0].data_port",
     "already used by services[0].primary.port"),
    (lambda d: d["services"][0]["backups"][0].update(address="10.0.0.10"), "services[0].backups[0].address",
     "must differ from the service address"),
    (lambda d: d["services"][0]["backups"].append(dict(d["services"][0]["backups"][0], data_port=7, mirror_port=8)),
     "services[0].backups[1].name", "duplicate backup name 'b1' (also backups[0])"),
    (lambda d: d["services"][0]["backups"].append(dict(d["services"][0]["backups"][0], name="b2", data_port=7,
                                                       mirror_port=8)),
     "services[0].backups[1].address", "10.0.0.20 is already backups[0]'s"),
    (lambda d: d["services"].append(dict(d["services"][0], port=81)), "services[1].name", "duplicate service name"),
    (lambda d: d["services"].append(dict(d["services"][0], name="web2")), "services[1].port", "already protected"),
    (lambda d: d["services"][0].update(divergence="loose"), "services[0].divergence",
     "must be one of strict, aligned, not 'loose'"),
    (lambda d: d["services"][0].update(divergence=None), "services[0].divergence", "not nothing"),
    (lambda d: d["services"][0]["primary"].pop("mac"), "services[0].primary.mac", "is required"),
    (lambda d: d["services"][0]["primary"].update(mac=None), "services[0].primary.mac", "MAC address"),
    (lambda d: d["services"][0]["backups"][0].pop("mac"), "services[0].backups[0].mac", "is required"),
    (lambda d: d["services"].append(dict(d["services"][0], name="db", port=81, primary={
        "port": 5, "mac": "00:00:00:00:00:11"}, backups=[dict(d["services"][0]["backups"][0], data_port=7,
                                                              mirror_port=8)])), "services[1].primary.port",
     "switch port 5 is the backup mirror port of services[0] (services[0].backups[0].mirror_port)"),
    (lambda d: d["services"].append(dict(d["services"][0], name="db", port=81, primary={
        "port": 6, "mac": "00:00:00:00:00:11"}, backups=[
        dict(d["services"][0]["backups"][0], data_port="s1-eth3", mirror_port=9)])),
     "services[1].backups[0].data_port", "is the primary port of services[0]"),
    (lambda d: d["switch"].update(dpid="zz"), "switch.dpid", "datapath id"),
    (lambda d: d["switch"].update(dpid=-1), "switch.dpid", "datapath id"),
    (lambda d: d.update(switch=[1]), "switch", "must be a mapping"),
    (lambda d: d["redis"].update(url="http://x"), "redis.url", "unix://"),
    (lambda d: d["redis"].update(host="x"), "redis.host", "unknown field"),
])
def test_each_bad_field_is_named(mutate, field, words):
    err = bad(mutate)
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(field + ":")


def test_hex_dpid_accepted():
    data = copy.deepcopy(GOOD)
    data["switch"]["dpid"] = "00:00:00:00:00:00:00:0a"
    assert config.parse(data).dpid == 10


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        config.parse([1, 2])


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        config.load(tmp_path / "nope.yaml")


def test_load_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("services: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(p)


def test_load_empty_file(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        config.load(p)


def test_load_error_names_field_and_file(tmp_path):
    data = copy.deepcopy(GOOD)
    data["services"][0]["port"] = 99999
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        config.load(p)
    assert err.value.field == "services[0].port"
    assert str(p) in str(err.value)


def test_cookie_ids_are_stable_nonzero_24_bit():
    ids = {config.service_cookie_id(f"svc{i}") for i in range(200)}
    assert 0 not in ids and all(0 < i < 2**24 for i in ids)
    # A service's flows outlive the controller that installed them: the id must be the
    # same in every process and release (the low 24 bits of the name's CRC-32).
    assert [config.service_cookie_id(n) for n in ("web", "demo", "db")] == [0xC93851, 0x42DFA0, 0xF4BC28]
    assert config.service_cookie_id("svc11438247") == 1    # its CRC-32 ends in 24 zero bits; 0 is reserved


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://user:s3cret@host/0", "rediss://user:***@host/0"),
    ("unix:///run/ftcp/redis.sock", "unix:///run/ftcp/redis.sock"),
    ("unix:///run/ftcp/redis.sock?db=0&password=s3cret", "unix:///run/ftcp/redis.sock?db=0&password=***"),
    ("unix://ftcp:s3cret@/run/ftcp/redis.sock", "unix://ftcp:***@/run/ftcp/redis.sock"),
    ("redis://:p@ss/w0rd@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://s3cret@host", "redis://***@host"),
    ("redis+sentinel://:s3cret@h1:26379,h2:26379/ftcp", "redis+sentinel://:***@h1:26379,h2:26379/ftcp"),
    ("redis://host/0?Password=s3cret;auth_token=s3cret", "redis://host/0?Password=***;auth_token=***"),
    ("unix:///s?%70assword=s3cret&db=0", "unix:///s?%70assword=***&db=0"),
    ("rediss://h/0?ssl_password=s3cret&ssl_keyfile=/k", "rediss://h/0?ssl_password=***&ssl_keyfile=***"),
])
def test_redact_url(url, shown):
    assert config.redact_url(url) == shown


def test_service_round_trips_through_to_dict():
    conf = config.parse(GOOD)
    svc = conf.services[0]
    assert config.parse_service(svc.to_dict()) == svc


def test_with_service_replaces_by_name_and_checks_uniqueness():
    conf = config.parse(GOOD)
    changed = config.parse_service(dict(GOOD["services"][0], port=81))
    assert config.with_service(conf, changed).services == (changed,)
    other = config.parse_service(dict(GOOD["services"][0], name="other"))  # same address:port as "web"
    with pytest.raises(ConfigError, match="already protected"):
        config.with_service(conf, other)
    assert config.without_service(conf, "web").services == ()


@pytest.mark.parametrize("text", ["²", "٣"])
def test_non_ascii_digits_are_a_port_name_not_a_number(text):
    # str.isdigit() is true for these; int() fails on "²" and reads "٣" as 3.
    data = copy.deepcopy(GOOD)
    data["services"][0]["primary"]["port"] = text
    assert config.parse(data).services[0].primary.port == PortRef(name=text)


def test_probe_section_defaults_and_checks():
    data = copy.deepcopy(GOOD)
    data["probe"] = {"address": "10.0.0.254"}
    probe = config.parse(data).probe
    assert (probe.address, probe.interval, probe.misses, probe.mac) == ("10.0.0.254", 0.05, 3, "02:66:74:63:70:01")
    assert config.parse(GOOD).probe is None
    data["probe"] = {"address": "10.0.0.10"}
    with pytest.raises(ConfigError, match="probe.address: 10.0.0.10 is used by services"):
        config.parse(data)
    data["probe"] = {"address": "10.0.0.254", "interval": 0}
    with pytest.raises(ConfigError, match="probe.interval: must be seconds"):
        config.parse(data)
    data["probe"] = {"address": "10.0.0.254", "misses": 0}
    with pytest.raises(ConfigError, match="probe.misses"):
        config.parse(data)


def test_redis_sentinels_make_one_sentinel_url():
    data = dict(copy.deepcopy(GOOD), redis={"sentinels": ["127.0.0.1:26379", "10.0.0.9:26380"], "master": "ftcp"})
    assert config.parse(data).redis_url == "redis+sentinel://127.0.0.1:26379,10.0.0.9:26380/ftcp"
    url = "redis+sentinel://:secret@127.0.0.1:26379/ftcp/2"
    assert config.parse(dict(copy.deepcopy(GOOD), redis={"url": url})).redis_url == url
    assert config.redact_url(url) == "redis+sentinel://:***@127.0.0.1:26379/ftcp/2"


@pytest.mark.parametrize("redis_cfg, field, words", [
    ({"sentinels": ["127.0.0.1"], "master": "ftcp"}, "redis.sentinels", "is not host:port"),
    ({"sentinels": [], "master": "ftcp"}, "redis.sentinels", "non-empty list"),
    ({"sentinels": ["h:1"]}, "redis.master", "the name the sentinels monitor"),
    ({"sentinels": ["h:1"], "master": "m", "url": "redis://h"}, "redis", "not both"),
    ({"url": "redis+sentinel://h:1"}, "redis.url", "redis+sentinel://"),
])
def test_bad_sentinel_settings_name_the_field(redis_cfg, field, words):
    err = bad(lambda d: d.update(redis=redis_cfg))
    assert err.field == field and words in err.problem, err
