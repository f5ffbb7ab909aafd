/**
 * The statistics extension (Triton's `GET /v2/models[/{name}]/stats`), read from the Prometheus
 * metrics the service already keeps, so that the two never disagree. The model serves /classify,
 * v2 infer and gRPC ModelInfer alike, so the figures cover all three.
 *
 * This is the public port: nothing here may depend on which member answered. Member runs do (the
 * images of one request that drew one member run as one batch, two members as two, and mean
 * sampling runs every member), and so do queue and compute times per run; a client reading the
 * counts around its own request would learn the draw. So the figures are per request and per
 * image: inference_count is images answered, execution_count is inference requests answered, and
 * the per-run figures (queue, compute, batch sizes, draws) stay on the internal metrics port.
 * What is not reported reads 0 (last_inference, queue, compute_*, cache).
 */
import type { Manifest } from '../ensemble/manifest.js';
import { grpcRoute, type Metrics } from '../metrics.js';

/** Routes of inference requests, as the request counter labels them: REST's patterns and gRPC's ModelInfer. */
const INFER_ROUTES = new Set(['/classify', '/v2/models/:name/infer', '/v2/models/:name/versions/:version/infer', grpcRoute('ModelInfer')]);

interface Sample { value: number; labels: Record<string, string | number>; metricName?: string }

async function samples(metrics: Metrics | null, name: string): Promise<Sample[]> {
  const metric = metrics?.registry.getSingleMetric(name);
  if (!metric) return [];
  return (await metric.get()).values as Sample[];
}

const total = (values: Sample[], keep: (s: Sample) => boolean = () => true) =>
  values.filter(keep).reduce((sum, s) => sum + s.value, 0);

const ZERO = { count: 0, ns: 0 };

export async function inferenceStatistics(metrics: Metrics | null, manifest: Manifest) {
  const requests = await samples(metrics, 'redserve_http_requests_total');
  const isInfer = (s: Sample) => INFER_ROUTES.has(String(s.labels.route));
  const durations = (await samples(metrics, 'redserve_http_request_duration_seconds')).filter(isInfer);
  const succeeded = total(requests, (s) => isInfer(s) && String(s.labels.status) === '200');
  return {
    name: manifest.name,
    version: manifest.version,
    last_inference: 0,
    inference_count: total(await samples(metrics, 'redserve_inference_images_total')),
    execution_count: succeeded,
    inference_stats: {
      // Answered inference requests; ns is the time of all of them, successes and failures together.
      success: { count: succeeded, ns: Math.round(total(durations, (s) => s.metricName === 'redserve_http_request_duration_seconds_sum') * 1e9) },
      fail: { count: total(requests, (s) => isInfer(s) && String(s.labels.status) !== '200'), ns: 0 },
      queue: ZERO,
      compute_input: ZERO,
      compute_infer: ZERO,
      compute_output: ZERO,
      cache_hit: ZERO,
      cache_miss: ZERO,
    },
    batch_stats: [],
  };
}
