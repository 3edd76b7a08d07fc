"""The 8042 keyboard controller: what a kernel's probe sees, and the reset line."""
import io

from pyvmm.machine import PC


def machine():
    return PC(console=io.BytesIO(), debugcon=io.BytesIO())


def test_a_probe_sequence_gets_its_answers_and_never_waits_forever():
    ports = machine().ports
    assert ports.read(0x64, 1) & 0x01 == 0              # nothing to read yet
    ports.write(0x64, 1, 0xAA)                          # controller self test
    assert ports.read(0x64, 1) & 0x01 and ports.read(0x60, 1) == 0x55
    ports.write(0x64, 1, 0xAB)                          # keyboard interface test
    assert ports.read(0x60, 1) == 0x00
    ports.write(0x64, 1, 0x20)                          # read the command byte ...
    command = ports.read(0x60, 1)
    ports.write(0x64, 1, 0x60)                          # ... and write it back, IRQ 1 off
    ports.write(0x60, 1, command & ~0x01)
    ports.write(0x64, 1, 0x20)
    assert ports.read(0x60, 1) == command & ~0x01
    ports.write(0x64, 1, 0xAD)                          # disabling the keyboard shows in it
    ports.write(0x64, 1, 0x20)
    assert ports.read(0x60, 1) & 0x10
    ports.write(0x60, 1, 0xFF)                          # keyboard reset: ACK, passed
    assert [ports.read(0x60, 1), ports.read(0x60, 1)] == [0xFA, 0xAA]
    ports.write(0x60, 1, 0xF2)                          # identify
    assert [ports.read(0x60, 1) for _ in range(3)] == [0xFA, 0xAB, 0x83]
    assert ports.read(0x64, 1) & 0x01 == 0


def test_pulsing_the_reset_line_stops_the_machine_with_a_message():
    pc = machine()
    pc.ports.write(0x64, 1, 0xFE)
    assert "reset the machine" in pc.stop_message
    pc = machine()
    pc.ports.write(0x64, 1, 0xD1)                       # output port with bit 0 (reset) low
    pc.ports.write(0x60, 1, 0x02)
    assert "reset the machine" in pc.stop_message


def test_a20_through_the_output_port():
    pc = machine()
    pc.ports.write(0x64, 1, 0xDD)
    pc.ports.write(0x64, 1, 0xD0)
    assert pc.ports.read(0x60, 1) & 0x02 == 0
    pc.ports.write(0x64, 1, 0xD1)
    pc.ports.write(0x60, 1, 0x03)
    pc.ports.write(0x64, 1, 0xD0)
    assert pc.ports.read(0x60, 1) & 0x02 and pc.stop_message is None
