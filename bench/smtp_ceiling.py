"""How fast can Python hand messages to a fast SMTP sink? The ceiling under the campaign pipeline.

    .venv/bin/python bench/smtp_ceiling.py [--messages 10000] [--port 2526] [--no-sink]

Starts Postfix's `smtp-sink -c -u nobody 127.0.0.1:2526 1000` (Debian package postfix; pass --no-sink
to use one already running there), prebuilds N composed ~20 KB messages (bench/mime.py's newsletter,
one per recipient), then sends all of them with
- a raw smtplib blast: one smtplib.SMTP per thread, sendmail(from, [to], raw) in a loop;
- nudge's SMTPProvider: one provider per thread, provider.send(message, raw) (pipelined MAIL/RCPT/DATA,
  no dot-quoting regex on base64 bodies);
with 1, 4 and 8 threads in one process, and 2 processes x 4 threads, printing messages per second.
The campaign pipeline's end-to-end figure is to be read against the smtplib line (issue 5: "the same
sink's ceiling with a raw smtplib blast beside it, as the ratio").
"""
import argparse
import multiprocessing
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from mime import sample_message  # noqa: E402

from nudge.delivery.message import compose, compose_skeleton  # noqa: E402
from nudge.delivery.smtp import SMTPProvider  # noqa: E402

SHAPES = [(1, 1), (1, 4), (1, 8), (2, 4)]      # (processes, threads per process)


def build(count):
    """count (message, raw) pairs, one recipient each, composed as the pipeline would."""
    template = sample_message()
    skeleton = compose_skeleton(template.from_email, template.from_name, template.reply_to)
    pairs = []
    for i in range(count):
        template.to_email = f"user{i}@example.org"
        template.message_id = f"<bench.{i}@shop.example>"
        message = type(template)(**{f: getattr(template, f) for f in template.__slots__})
        pairs.append((message, compose(skeleton, message)))
    return pairs


def blast_smtplib(pairs, port):
    conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local")
    for message, raw in pairs:
        conn.sendmail(message.from_email, [message.to_email], raw)
    conn.quit()


def blast_provider(pairs, port):
    provider = SMTPProvider(f"smtp://127.0.0.1:{port}", local_hostname="bench.local")
    for message, raw in pairs:
        result = provider.send(message, raw)
        if not result.ok:
            raise RuntimeError(result.error)
    provider.close()


def run_threads(blast, pairs, port, threads):
    shares = [pairs[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=blast, args=(share, port)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _child(blast, pairs, port, threads, start, done):
    start.wait()
    run_threads(blast, pairs, port, threads)
    done.put(os.getpid())


def measure(blast, pairs, port, processes, threads):
    """Messages per second for one shape."""
    if processes == 1:
        began = time.perf_counter()
        run_threads(blast, pairs, port, threads)
        return len(pairs) / (time.perf_counter() - began)
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Queue()
    children = [context.Process(target=_child, args=(blast, pairs[i::processes], port, threads, start, done))
                for i in range(processes)]
    for child in children:
        child.start()
    time.sleep(0.5)     # let every child reach start.wait()
    began = time.perf_counter()
    start.set()
    for _ in children:
        done.get()
    elapsed = time.perf_counter() - began
    for child in children:
        child.join()
    return len(pairs) / elapsed


def start_sink(port):
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(binary):
        sys.exit("smtp-sink not found: apt-get install -y postfix")
    command = [binary, "-c", f"127.0.0.1:{port}", "1000"]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return sink
        except OSError:
            time.sleep(0.1)
    sink.kill()
    sys.exit(f"smtp-sink did not start on port {port}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=2526)
    parser.add_argument("--no-sink", action="store_true", help="use an smtp-sink already listening on --port")
    args = parser.parse_args()
    sink = None if args.no_sink else start_sink(args.port)
    try:
        pairs = build(args.messages)
        print(f"{args.messages:,} messages of {len(pairs[0][1]):,} bytes to smtp-sink on 127.0.0.1:{args.port}, "
              f"{os.cpu_count()} cores")
        print(f"{'shape':22} {'smtplib msgs/s':>15} {'SMTPProvider msgs/s':>20}")
        for processes, threads in SHAPES:
            raw = measure(blast_smtplib, pairs, args.port, processes, threads)
            ours = measure(blast_provider, pairs, args.port, processes, threads)
            shape = f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
            print(f"{shape:22} {raw:15,.0f} {ours:20,.0f}")
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()


if __name__ == "__main__":
    main()
