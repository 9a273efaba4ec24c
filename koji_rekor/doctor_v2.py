"""koji-rekor doctor's checks of a Rekor v2 setup: keys, trust files, the shard."""

import os

from .display import display_url
from .errors import RekorLogError
from .privileges import unreadable_by
from .rekor import make_client
from .rpmsig import read_public_key


def v2_key_problem(armored, sigkey=None):
    """Why Rekor v2 cannot log signatures by this key, or None, and the
    keyDetails it would log them as: the (sub)key named sigkey, or (without
    one, public_key_path) every signing (sub)key. v2 takes RSA 2048, 3072,
    4096 and ECDSA P-256, P-384, P-521 (rekor-tiles' allowed key types)."""
    from .v2 import hashedrekord
    try:
        packets = hashedrekord.key_packets(armored)
    except (RekorLogError, ValueError, IndexError) as e:
        return 'not a readable OpenPGP key: %s' % e, []
    encrypt_only = (2, 16, 18)  # RSA encrypt-only, Elgamal, ECDH: never sign
    if sigkey:
        packets = [p for p in packets if p.key_id.lower().endswith(sigkey.lower())]
    packets = [p for p in packets if p.algorithm not in encrypt_only]
    if not packets:
        return 'no signing key %s in it' % (sigkey or ''), []
    problems, details = [], []
    for packet in packets:
        name = packet.key_id[-8:].lower()
        try:
            _, public = hashedrekord.der_public_key(packet)
        except RekorLogError as e:
            problems.append('%s: %s' % (name, str(e).replace('its header signature is',
                                                               'it signs with')))
            continue
        if packet.algorithm == hashedrekord.PK_ECDSA:
            details.append(next(v[2] for v in hashedrekord.CURVES.values() if v[0] == {
                'secp256r1': 'P-256', 'secp384r1': 'P-384',
                'secp521r1': 'P-521'}[public.curve.name]))
        elif (public.key_size + 7) // 8 * 8 not in hashedrekord.RSA_SIZES:
            problems.append('%s: RSA-%d; Rekor v2 takes RSA keys of 2048, 3072 or 4096 bits '
                            'only' % (name, public.key_size))
        else:
            details.append('PKIX_RSA_PKCS1V15_%d_SHA256' % ((public.key_size + 7) // 8 * 8))
    return '; '.join(problems) or None, details


def check_v2_signing_keys(checkup, settings):
    """With api = 2, each signing key must be one Rekor v2 can log."""
    files = []
    directory = settings.public_key_dir
    for name in sorted(os.listdir(directory)) if directory else []:
        path = os.path.join(directory, name)
        if name.endswith('.asc') and not name.startswith('.') and os.path.isfile(path):
            files.append((path, name[:-len('.asc')]))
    if settings.public_key_path:
        files.append((settings.public_key_path, None))
    for path, sigkey in files:
        check = 'v2 key %s' % path
        try:
            problem, details = v2_key_problem(read_public_key(path), sigkey)
        except RekorLogError as e:
            checkup.add('skip', check, str(e))  # the key check above says why
            continue
        if problem:
            checkup.add('fail', check, 'Rekor v2 cannot log its signatures: %s' % problem)
        else:
            checkup.add('ok', check, 'loggable in Rekor v2 as %s%s' % (
                ', '.join(sorted(set(details))),
                ' (RSA signatures must use SHA-256: rpmsign --define "_gpg_digest_algo '
                'sha256")' if any('RSA' in d for d in details) else ''))

V2_WARN_DAYS = 30  # warn when the newest shard stops taking entries this soon


def load_trust_file(path, parse):
    from .safefs import MAX_FILE
    with open(path, 'rb') as fo:
        return parse(fo.read(MAX_FILE))


def check_v2_trust_files(checkup, settings, now=None):
    """[rekor] trusted_root and signing_config parse, list a log (shard)
    valid now, and the newest does not end within V2_WARN_DAYS days.
    Returns (TrustedRoot or None, the shards to write to, newest first)."""
    from datetime import datetime, timedelta, timezone
    from .v2 import trust
    now = now or datetime.now(timezone.utc)
    soon = now + timedelta(days=V2_WARN_DAYS)

    def ending(valid):
        return valid.end is not None and valid.end <= soon

    root, shards = None, None
    for option, parse in (('trusted_root', trust.parse_trusted_root),
                          ('signing_config', trust.parse_signing_config)):
        path = getattr(settings, option)
        if not path:
            continue
        check = option
        try:
            parsed = load_trust_file(path, parse)
        except OSError as e:
            checkup.add('fail', check, '[rekor] %s %s: cannot read it: %s'
                        % (option, path, e.strerror))
            continue
        except trust.TrustError as e:
            checkup.add('fail', check, '[rekor] %s %s: %s' % (option, path, e))
            continue
        if option == 'trusted_root':
            root = parsed
            valid = sorted((log for log in parsed.logs if log.valid.contains(now)),
                           key=lambda log: log.valid.start or now, reverse=True)
            names = [log.base_url for log in valid]
            extra = ('; keys it cannot verify: %s' % ', '.join(parsed.unsupported)
                     if parsed.unsupported else '')
        else:
            valid = trust.select_shards(parsed, now)
            shards = valid
            names = [shard.url for shard in valid]
            extra = ''
        if not valid:
            checkup.add('fail', check, '%s lists no %s valid now' % (
                path, 'log' if option == 'trusted_root' else 'Rekor v2 shard'))
        elif ending(valid[0].valid):
            checkup.add('warn', check, '%s: the newest, %s, is valid only until %s: update '
                        'the file (Sigstore publishes the next shard)%s' % (
                            path, names[0], valid[0].valid.end.strftime('%Y-%m-%d'), extra))
        else:
            checkup.add('ok', check, '%s: valid now: %s%s' % (path, ', '.join(names), extra))
    return root, shards


def check_v2_log(checkup, settings):
    """With api = 2: the trust files, then the shard the hub writes to
    (signing_config's newest valid one, else url): reachable, and its
    /checkpoint verifies with the configured key and origin."""
    from .v2 import note, trust
    root, shards = check_v2_trust_files(checkup, settings)
    url = shards[0].url if shards else settings.url.rstrip('/')
    try:
        # [rekor] origin is url's; another shard's origin is its URL's.
        origin = (url == settings.url.rstrip('/') and settings.origin) or trust.origin_of(url)
    except trust.TrustError as e:
        checkup.add('fail', 'log', str(e))
        return
    log, where = None, None
    try:
        if settings.log_public_key and url == settings.url.rstrip('/'):
            hidden = unreadable_by(settings.hub_user, settings.log_public_key)
            if hidden:
                checkup.add('fail', 'log', '[rekor] log_public_key %s: %s: every upload would '
                            'fail' % (settings.log_public_key, hidden))
                return
            log = load_trust_file(settings.log_public_key,
                                  lambda pem: trust.log_key(origin, pem))
            where = '[rekor] log_public_key %s' % settings.log_public_key
        elif root is not None:
            log = next((k for k in root.logs if k.origin == origin), None)
            where = '[rekor] trusted_root %s' % settings.trusted_root
    except OSError as e:
        checkup.add('fail', 'log', 'cannot read %s: %s' % (settings.log_public_key, e.strerror))
        return
    except trust.TrustError as e:
        checkup.add('fail', 'log', '[rekor] log_public_key %s: %s' % (settings.log_public_key, e))
        return
    if log is None:
        checkup.add('fail', 'log', '%s: no key for this Rekor v2 shard (origin %s): set [rekor] '
                    'log_public_key, or trusted_root to a TrustedRoot that lists it'
                    % (display_url(url), origin))
        return
    client = make_client(settings, url, api=2, retries=0, backoff=1.0)
    try:
        raw = client.read_checkpoint()
        checkpoint = note.verify_checkpoint(raw, log.note_key, origin)
    except note.NoteError as e:
        checkup.add('fail', 'log', '%s: its checkpoint does not verify with %s and origin %s: '
                    '%s' % (display_url(url), where, origin, e))
    except RekorLogError as e:
        checkup.add('fail', 'log', str(e))
    else:
        checkup.add('ok', 'log', '%s (Rekor v2): checkpoint of size %d verifies with %s, '
                    'origin %s' % (display_url(url), checkpoint.size, where, origin))
    finally:
        client.close()
