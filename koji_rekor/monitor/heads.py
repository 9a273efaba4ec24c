"""The tree heads the monitor checks: kept in its state, proved consistent, and the hub's ones as evidence."""

import os

from ..checkpoint import pick_log_key, verify_checkpoint
from ..errors import LogBehind, RekorLogError, RekorRejected, RekorUnavailable, VerificationError
from ..logkey import LogKeys, UnknownLogKey
from ..rekor.models import TreeHead
from ..safefs import logs_dir
from ..state import (
    check_consistency,
    checkpoint_dir,
    checkpoint_parts,
    prove_consistency,
    read_tree_head,
    saved_tree_head,
)
from ..verify import split_entry_id


def check_tree_heads(view):
    """Verify the signed head of the active tree and of each inactive shard
    and prove it consistent with the one kept; notice any tree seen before
    that the log no longer lists. Only the signed checkpoint counts: the
    treeSize and rootHash beside it are unsigned."""
    info = view.client.log_info()
    if not isinstance(info.get('inactiveShards') or [], list):
        raise RekorUnavailable('malformed log info from Rekor: inactiveShards is not a list')
    # Global log indexes run through the inactive shards, oldest first, then
    # the active tree.
    shards = [(shard, False) for shard in info.get('inactiveShards') or []] + [(info, True)]
    listed = set()
    for shard, active in shards:
        tree_id, note = TreeHead.from_log_info(shard)
        listed.add(tree_id)
        try:
            checkpoint = verify_checkpoint(note, view.key, view.settings.origin_host, tree_id)
        except UnknownLogKey as e:
            if active:
                view.shards.append((tree_id, None))
                view.report.finding('bad tree head', 'tree %d: its signed tree head does not '
                                    'verify: %s' % (tree_id, e))
                continue
            # An inactive shard signed by a key not configured (a private
            # log's shards may each have their own): reported and skipped;
            # its unsigned size only places the trees after it.
            view.shards.append((tree_id, unsigned_size(shard)))
            view.skipped.add(tree_id)
            view.report.not_checked('tree %d: %s; set [rekor] log_public_key to a file holding '
                                    'its key too: its entries are skipped' % (tree_id, e))
            continue
        except VerificationError as e:
            view.shards.append((tree_id, None))
            view.report.finding('bad tree head', 'tree %d: its signed tree head does not verify: %s'
                                % (tree_id, e))
            continue
        view.shards.append((tree_id, checkpoint.size))
        view.tree_keys[tree_id] = pick_log_key(view.key, note=note)
        check_tree_head(view, tree_id, checkpoint, active)
    for tree_id, size in kept_tree_heads(view.state, view.key):
        if tree_id not in listed:
            view.report.finding('tree missing', 'tree %d, seen before at size %d, is not listed by '
                                'the log any more, neither active nor inactive' % (tree_id, size))


def unsigned_size(shard):
    size = shard.get('treeSize')
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def tree_of(entry_id):
    try:
        return split_entry_id(entry_id)[0]
    except VerificationError:
        return None


def tree_key(view, tree_id):
    """The log key of a tree: the one its signed head verified with."""
    return view.tree_keys.get(tree_id) or pick_log_key(view.key)


def check_tree_head(view, tree_id, checkpoint, active):
    """A signed tree head against the one kept for its tree: a tree that
    shrank, or one not provably consistent with it, is a finding."""
    before = saved_tree_head(view.state, tree_key(view, tree_id), tree_id)
    tree = {'tree_id': str(tree_id), 'active': active, 'size': checkpoint.size,
            'root_hash': checkpoint.root_hash.hex(), 'size_before': before and before[0]}
    view.report.trees.append(tree)
    if before and before[0] > checkpoint.size:
        tree['status'] = 'shrank'
        view.heads[(tree_id, checkpoint.size, checkpoint.root_hash)] = False
        try:
            check_consistency(view.client, view.state, tree_key(view, tree_id), tree_id,
                              checkpoint.size, checkpoint.root_hash, checkpoint.note)
            how = 'an older view, which the log still proves the newer one extends'
        except (VerificationError, RekorRejected, LogBehind) as e:
            # LogBehind: after its retries, still an instance that cannot
            # see the size it signed before; a shrink all the same.
            how = 'and the log cannot prove it consistent with the one seen before: %s' % e
        view.report.finding('tree shrank', 'tree %d shrank: the log signs size %d now, size %d '
                            'was seen before (%s)' % (tree_id, checkpoint.size, before[0], how))
        return
    tree['status'] = ('first seen' if before is None else 'unchanged'
                      if before == (checkpoint.size, checkpoint.root_hash) else 'grew')
    proved = prove_consistent(view, tree_id, checkpoint)
    if proved is None:
        tree['status'] = 'not checked'
    elif not proved:
        tree['status'] = 'inconsistent'
    check_hub_tree_head(view, tree_id, checkpoint)


def check_hub_tree_head(view, tree_id, checkpoint):
    """The tree head the hub kept under the topdir may only add evidence: one
    the log signed that does not fit this one is a finding; it is read (with
    its signature verified), never written, never the monitor's memory."""
    topdir = getattr(view, 'topdir', None)
    if topdir is None:
        return
    try:
        with logs_dir(topdir, checkpoint_parts(view.key), create=False) as fd:
            hub = read_tree_head(fd, view.key, tree_id)
    except (OSError, RekorLogError):  # none kept there, or not readable: no evidence
        return
    if hub is None or hub == (checkpoint.size, checkpoint.root_hash):
        return
    try:
        prove_consistency(view.client, tree_id, hub, (checkpoint.size, checkpoint.root_hash))
    except (VerificationError, RekorRejected) as e:
        view.report.finding('split view', 'tree %d: the tree head of size %d the hub kept, '
                            'signed by the log, does not fit the one it signs now (size %d): %s'
                            % (tree_id, hub[0], checkpoint.size, e))
    except RekorLogError as e:
        view.report.not_checked('tree %d: the tree head the hub kept: %s' % (tree_id, e))


def prove_consistent(view, tree_id, checkpoint):
    """check_consistency once per tree head and run; a failure is a split
    view, whether the proof fails or the log refuses to give one. None:
    not checked, an instance behind the log refused the proof after its
    retries (it catches up; the next run proves it)."""
    head = (tree_id, checkpoint.size, checkpoint.root_hash)
    if head not in view.heads:
        try:
            check_consistency(view.client, view.state, tree_key(view, tree_id), tree_id,
                              checkpoint.size, checkpoint.root_hash, checkpoint.note)
            view.heads[head] = True
        except LogBehind as e:
            view.heads[head] = None
            view.report.not_checked('tree %d: the tree head of size %d is not proved consistent '
                                    'with the one seen before: %s' % (tree_id, checkpoint.size, e))
        except VerificationError as e:
            view.heads[head] = False
            view.report.finding('split view', 'tree %d: %s' % (tree_id, e))
        except RekorRejected as e:
            view.heads[head] = False
            view.report.finding('split view', 'tree %d: split view: the log refuses to prove its '
                                'tree of size %d consistent with the tree head seen before: %s'
                                % (tree_id, checkpoint.size, e))
    return view.heads[head]


def kept_tree_heads(state, key):
    """(tree ID, size) of every tree head kept for the log."""
    if isinstance(key, LogKeys):
        return [head for one in key for head in kept_tree_heads(state, one)]
    directory = checkpoint_dir(state, key)
    heads = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        stem, _, suffix = name.partition('.')
        if suffix == 'json' and stem.isdigit():
            saved = saved_tree_head(state, key, int(stem))
            if saved is not None:  # one that does not verify is ignored (and logged)
                heads.append((int(stem), saved[0]))
    return heads
