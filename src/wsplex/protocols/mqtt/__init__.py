"""``mqtt``: an MQTT 3.1.1 and 5.0 broker on the topic space (SPEC §11).

:mod:`.codec` is the packet format (pure, no I/O), :mod:`.state` what the broker
keeps per client, :mod:`.broker` the protocol itself.
"""

from wsplex.protocols.mqtt.broker import MQTTProtocol

__all__ = ["MQTTProtocol"]
