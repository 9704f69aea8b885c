"""A stand-in for the service behind nginx: answers every GET and POST with 200 and says what it
saw (path and the X-Key-Id nginx passed on). Prints its port on the first line of stdout."""
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = f"upstream saw {self.command} {self.path} key={self.headers.get('X-Key-Id', '')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
os.close(1)  # the reader waits for the end of this output
server.serve_forever()
