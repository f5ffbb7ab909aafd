/**
 * The benchmark's server set-up that needs no server: MLServer's settings (its batching is
 * redserve's, its metrics off, its three ports distinct) and the workload list.
 */
import t from 'tap';
import { DEFAULTS } from '../../src/config.js';
import { freePorts, mlserverSettings } from '../../bench/servers.js';
import { pickWorkloads } from '../../bench/workloads.js';

t.test('three free ports at once are three different ports', async (t) => {
  const ports = await freePorts(3);
  t.equal(new Set(ports).size, 3, ports.join(', '));
});

t.test('MLServer settings: redserve\'s batching, no metrics, the workers and ports asked for', async (t) => {
  const { settings, model } = mlserverSettings({ modelDir: '/pkg', sampling: 'mean', workers: 3, httpPort: 1, grpcPort: 2, metricsPort: 3, metricsDir: '/tmp/m' });
  t.same([settings.http_port, settings.grpc_port, settings.metrics_port], [1, 2, 3]);
  t.equal(settings.metrics_endpoint, null);
  t.equal(settings.parallel_workers, 3);
  t.equal(model.name, 'red-mean');
  t.equal(model.max_batch_size, DEFAULTS.maxBatchImages);
  t.equal(model.max_batch_time * 1e6, DEFAULTS.queueDelayUs);
  t.same(model.parameters, { uri: '/pkg', extra: { sampling: 'mean' } });
});

t.test('workloads are picked by name, in the order given; an unknown name is refused', async (t) => {
  t.same(pickWorkloads('resnet18, fmnist').map((w) => w.name), ['resnet18', 'fmnist']);
  t.throws(() => pickWorkloads('fmnist,vgg'), /--workloads: 'vgg' is not one of fmnist, resnet20, resnet18/);
});
