"""kombu's filesystem transport with atomic message files.

kombu 5.7's filesystem transport creates a message file and then writes it,
so a worker scanning the folder can read an empty or partial file, fail to
decode it and stop with an unrecoverable error. This transport writes each
message to a hidden temporary file and renames it into place, so readers see
whole messages only, and skips (and logs) a file that still cannot be
decoded instead of stopping the worker. ``cachecampaign.celery`` registers
it under the ``filesystem://`` scheme.
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# Undecodable files skipped in one read before the channel reports no message.
MAX_SKIPPED_FILES = 100


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot keeps readers from taking the file as a message of any queue.
        temporary = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4()}.part")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as error:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from error

    def _get(self, queue):
        for _attempt in range(MAX_SKIPPED_FILES):
            try:
                return super()._get(queue)
            except ValueError as error:
                logger.error("Skipped a message file of queue %s that cannot be decoded: %s", queue, error)
        raise filesystem.Empty()


class Transport(filesystem.Transport):
    Channel = Channel
