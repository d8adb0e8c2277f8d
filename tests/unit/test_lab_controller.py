"""The lab's controller node reads its shell's output leniently: Mininet checks that the
controller listens with telnet to its OpenFlow port, and Ryu's HELLO (a random
transaction id) is not always valid UTF-8."""
from topology.lab import _lenient

HELLO_AFTER_TELNET = b"Trying 127.0.0.1...\r\nConnected to 127.0.0.1.\r\nEscape character is 'A'.\r\n" \
                     b"\x04\x00\x00\x08\xb4\x1f\x9a\xc3"


class ShellNode:
    """Stands in for mininet.node.Node: a strict decoder, then startShell."""

    def __init__(self):
        import codecs
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.startShell()

    def startShell(self):
        self.started = True


def test_a_binary_hello_does_not_fail_the_controller_node():
    node = _lenient(ShellNode)()
    assert node.started
    assert "Connected to 127.0.0.1" in node.decoder.decode(HELLO_AFTER_TELNET)


def test_the_strict_decoder_it_replaces_would_fail():
    node = ShellNode()
    try:
        node.decoder.decode(HELLO_AFTER_TELNET)
    except UnicodeDecodeError:
        return
    raise AssertionError("the stand-in's strict decoder took a non-UTF-8 HELLO")
