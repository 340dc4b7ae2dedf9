"""Host sensors, loaded by name as plug-ins (see `base.py` for the interface).

Each entry maps the name used in agent.yaml to `module:Class`; modules are imported only when
the sensor is configured, so a host without BCC never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.sensors.base import Event, Sensor, SensorUnavailable

SENSORS: dict[str, str] = {
    "procfs": "agents.sensors.procfs:ProcfsSensor",
    "inotify": "agents.sensors.inotify:InotifySensor",
    "netconn": "agents.sensors.netconn:NetconnSensor",
    "bcc-exec": "agents.sensors.bcc_exec:BccExecSensor",
    "bcc-net": "agents.sensors.bcc_net:BccNetSensor",
    "xdp-flows": "agents.sensors.xdp_flows:XdpFlowsSensor",
    "dns": "agents.sensors.dns:DnsSensor",
    "auth": "agents.sensors.auth:AuthSensor",
    "etw": "agents.sensors.etw:EtwSensor",
    "scenario": "agents.sensors.scenario:ScenarioSensor",
}


def sensor_class(name: str) -> type[Sensor]:
    try:
        target = SENSORS[name]
    except KeyError:
        raise KeyError(f"unknown sensor '{name}'; known: {', '.join(SENSORS)}") from None
    module, _, cls = target.partition(":")
    found: Any = getattr(importlib.import_module(module), cls)
    return found  # type: ignore[no-any-return]


def create(name: str, options: dict[str, Any] | None = None) -> Sensor:
    return sensor_class(name)(options)


__all__ = ["SENSORS", "Event", "Sensor", "SensorUnavailable", "create", "sensor_class"]
