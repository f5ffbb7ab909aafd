/** Tensors sent as such: shape, finiteness and range are checked, and errors name the tensor. */
import t from 'tap';
import type { InputSpec } from '../../src/ensemble/manifest.js';
import { tensorsToBatch } from '../../src/preprocess/tensor.js';

const gray: InputSpec = {
  name: 'input', shape: [1, 4, 4], channels: 'gray', scale: 1 / 255, mean: [0.5], std: [0.25],
  resize: { fit: 'fill', kernel: 'nearest', background: 0 },
};

t.test('tensors: [C,H,W] and [1,C,H,W] are accepted; wrong shapes and non-finite values are named', async (t) => {
  const spec: InputSpec = { ...gray, shape: [1, 2, 2] };
  t.same(Array.from(tensorsToBatch([[[[0.25, 0.5], [0.75, 1]]], [[[[1.25, 1.5], [1.75, 2]]]]], spec)), [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]);
  t.throws(() => tensorsToBatch([[[1, 2], [3, 4]]], spec), /^tensor 0: shape \[2, 2\] does not match the model input \[1, 2, 2\]$/);
  t.throws(() => tensorsToBatch([[[[1, 2], [3]]]], spec), /ragged/);
  let deep: unknown = [1];
  for (let d = 0; d < 100_000; d++) deep = [deep];
  t.throws(() => tensorsToBatch([deep], spec), /nested deeper than \[1, 1, 2, 2\]/, 'deep nesting is refused, not a stack overflow');
  t.throws(() => tensorsToBatch([[[[1, 2], [3, null]]]], spec), /element 3 is null/);
  t.throws(() => tensorsToBatch([[[[0, 0], [0, 0]]], [[[0, 0], [0, 9]]]], spec, (i) => `tensors[${i}]`), /^tensors\[1\]: element 3 \(channel 0\) is 9;/,
    'a protocol names its own field');
});
