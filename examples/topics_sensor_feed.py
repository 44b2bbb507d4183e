"""Topics: two sensor tasks announce themselves and publish readings; the driver hears the readings
through a wildcard subscription, watches the sensors come and go on $presence, and reads the retained
last values at the end."""
import time

import tether


@tether.remote
def sensor(name, room, readings):
    # A worker outlives its task, so the with block withdraws the announcement when the task is done.
    with tether.announce(f"sensor.{name}"):
        for value in readings:
            tether.publish(f"sensors.{room}.temp", value)  # retained: the room's last value is kept
            time.sleep(0.1)
    return len(readings)


def main():
    tether.init(num_cpus=2)
    readings = tether.subscribe("sensors.*.temp", lambda subject, value: print(f"  {subject} = {value}"))
    presence = tether.subscribe("$presence.#")
    tasks = [sensor.remote("a", "kitchen", [21.5, 21.7, 22.0]), sensor.remote("b", "hall", [18.0, 18.4])]

    gone = 0
    while gone < len(tasks):
        subject, value = presence.get(timeout=60)
        print(f"{subject.removeprefix('$presence.')} is {'present' if value['present'] else 'gone'}")
        gone += not value["present"]

    print(f"the sensors sent {sum(tether.get(tasks))} readings")
    print("last values:", tether.retained("sensors.#"))
    readings.close()
    presence.close()
    tether.shutdown()


if __name__ == "__main__":
    main()
