"""The fixtures themselves: real servers answer, and influxdb-client writes through the v2 bridge."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS


def test_mosquitto_delivers_qos1(mosquitto):
    got: list[bytes] = []
    done = threading.Event()

    def on_message(client, userdata, msg):
        got.append(msg.payload)
        done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-sub")
    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("t/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-pub")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    import time
    time.sleep(0.3)
    pub.publish("t/x", b"hello", qos=1).wait_for_publish(5)
    assert done.wait(5)
    assert got == [b"hello"]
    pub.loop_stop()
    sub.loop_stop()


def test_influxdb_client_writes_through_bridge_and_influxql_reads_back(influx):
    with InfluxDBClient(url=influx.url, token="t", org="tanji") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket=influx.db, record=["m,meter=a v=1.5 1700000000000",
                                              "m,meter=b v=2.5 1700000000000"], write_precision="ms")
    result = influx.query("SELECT sum(v) FROM m", influx.db)
    assert result["results"][0]["series"][0]["values"][0][1] == 4.0
