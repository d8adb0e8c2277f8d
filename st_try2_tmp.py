import socket, time
from tests.integration.rest_server import RestServer, TOKEN
s = RestServer("smoke", token=TOKEN).start()
try:
    for m, p, b, h in [("GET", "/ftcp/connections?client=%ff", None, {}), ("GET", "/ftcp/services/%ff", None, {}),
                       ("GET", "/ftcp/connections/%ff", None, {}), ("GET", "/ftcp/connections?limit=5&limit=6", None, {}),
                       ("PUT", "/ftcp/services/db", "x" * 70000, {"Authorization": "Bearer " + TOKEN}),
                       ("PUT", "/ftcp/services/db", b"\xff\xfe", {"Authorization": "Bearer " + TOKEN}),
                       ("GET", "/ftcp/services/web?x", None, {}), ("HEAD", "/ftcp/services", None, {}),
                       ("PUT", "/ftcp/services/db", "{}", {"Authorization": "Bearer \xe9"}),
                       ]:
        st, resp, body = s.request(m, p, b, headers=h)
        print(m, p[:50], st, resp.getheader("Content-Type"), str(body)[:200])
    c = socket.create_connection(("127.0.0.1", s.port)); c.sendall(b"\x00\xff garbage\r\n\r\n"); print(c.recv(300)); c.close()
    print("alive", s.alive())
finally:
    s.stop()
print(open("/run/ftcp-rest-test/smoke/ryu-manager.log").read()[-1500:])
