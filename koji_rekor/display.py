"""Strings for people: URLs without credentials, times, short reasons."""

import json
import socket
import ssl
import sys
import time
import urllib.parse


def display_url(url):
    """The URL without credentials: for receipts, log lines and file names."""
    parts = urllib.parse.urlsplit(url)
    if '@' not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit('@', 1)[1]))


def same_origin(url, other):
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def seconds(value):
    return '%g s' % round(value, 1)


def counted(number, one, many=None):
    """'1 signature', '2 signatures': a count with its noun agreeing."""
    return '%d %s' % (number, one if number == 1 else many or one + 's')


def short_reason(exc):
    """A failed request's cause in a few words (connection refused, cannot
    resolve host, TLS: certificate verify failed: ...), found by walking the
    chain of errors requests and urllib3 wrap around the socket's."""
    chain, todo = [], [exc]
    while todo and len(chain) < 20:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or any(error is e for e in chain):
            continue
        chain.append(error)
        todo += [error.__cause__, error.__context__, getattr(error, 'reason', None)]
        todo += list(error.args)
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = getattr(error, 'verify_message', None)
            return 'TLS: certificate verify failed' + (': %s' % detail if detail else '')
    for error in chain:
        if isinstance(error, ssl.SSLError):
            reason = getattr(error, 'reason', None) or type(error).__name__
            return 'TLS: %s' % reason.lower().replace('_', ' ')
        if isinstance(error, socket.gaierror):
            return 'cannot resolve host'
    # The socket's own error, beneath what requests and urllib3 wrap it in.
    for error in chain:
        if isinstance(error, OSError) and not type(error).__module__.startswith(
                ('requests', 'urllib3')):
            text = error.strerror[:1].lower() + error.strerror[1:] if error.strerror \
                else str(error)
            return ' '.join(text.split())
    text = ' '.join(str(chain[-1]).split())
    return text if len(text) <= 120 else text[:117] + '...'


def innermost(exc):
    """The error at the bottom of a chain of wrapped errors."""
    seen = set()
    while exc.__context__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__context__
    return exc


def utc(when):
    """A Unix time as UTC text, or what it is when no calendar has it."""
    try:
        return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(when))
    except (OverflowError, ValueError, OSError, TypeError):
        return 'time %r (out of range)' % (when,)


def escape(value):
    """Untrusted text (names from the topdir, the log's answers, records,
    receipts) as it may reach a terminal, a log line or --json text: every
    character that is not printable (control characters, so ANSI escape
    sequences, line breaks; also backslashes, so that an escape cannot be
    forged) is shown as a Python escape."""
    text = str(value)
    if text.isprintable() and '\\' not in text:
        return text
    return ''.join(c if c.isprintable() and c != '\\' else c.encode('unicode_escape').decode()
                   for c in text)


def text_excerpt(value, limit=200):
    """A server's text on one short line."""
    text = ' '.join(''.join(c if c.isprintable() else ' ' for c in str(value)).split())
    return text if len(text) <= limit else text[:limit] + '...'


def text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def format_time(seconds, signed):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(seconds)) + (
        '' if signed else ' (unsigned: no signed entry timestamp)')


def format_age(seconds):
    for unit, size in (('d', 86400), ('h', 3600), ('min', 60)):
        if seconds >= size:
            return '%d %s' % (seconds // size, unit)
    return '%d s' % seconds


def emit(args, status, data, text):
    """Print a command's result, as JSON with --json (with its exit status),
    else as text; returns the exit status."""
    if getattr(args, 'json', False):
        sys.stdout.write(json.dumps(dict(data, exit_status=status), indent=2, sort_keys=True)
                         + '\n')
    elif text:
        sys.stdout.write(text if text.endswith('\n') else text + '\n')
    return status
