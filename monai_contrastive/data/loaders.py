# Copyright (c) MONAI Consortium and monai-contrastive contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Data loaders whose errors reach the caller."""

from __future__ import annotations

from monai.data import DataLoader as MonaiDataLoader
from monai.data import ThreadBuffer, ThreadDataLoader

__all__ = ["CheckedThreadDataLoader"]


class _CheckedThreadBuffer(ThreadBuffer):
    """MONAI's ``ThreadBuffer`` drops an exception raised in its thread: the iteration just ends early (an epoch of
    a few batches, rc 0). This one hands it over and re-raises it in the consuming thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error: BaseException | None = None

    def enqueue_values(self):
        try:
            super().enqueue_values()
        except BaseException as e:  # re-raised by __iter__ in the consuming thread
            self.error = e

    def __iter__(self):
        self.error = None
        yield from super().__iter__()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class CheckedThreadDataLoader(ThreadDataLoader):
    """``monai.data.ThreadDataLoader`` whose background thread's errors reach the caller.

    MONAI's version loses any exception raised while loading a batch (a corrupt video, a clip that cannot be cut):
    the epoch silently ends early and the run exits 0. Here the error is re-raised where the batches are consumed
    (the trainer), with its original traceback. Same arguments as ``ThreadDataLoader``.
    """

    def __iter__(self):
        source = MonaiDataLoader.__iter__(self)
        buffer = _CheckedThreadBuffer(source, self.buffer_size, self.buffer_timeout)
        for batch in buffer:
            for _ in range(self.repeats):
                yield batch
