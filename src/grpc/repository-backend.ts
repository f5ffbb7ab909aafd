/**
 * InferenceBackend over the path REST v2 takes (src/http/v2.ts): the repository resolves the model
 * a call names (any model, any served version) and holds it while the call runs, so a swap or an
 * unload waits for it; the one inference step (src/inference.ts) takes the model's admission slot,
 * screens the batch with the shared detection and draws the members. The access check and the
 * per-model admissions are the instances REST uses (app.ts ServingParts), so limits, key failures
 * and detection histories count both APIs together.
 */
import type { Detection, DetectionLog } from '../detect/http.js';
import { UnavailableError } from '../errors.js';
import type { AccessCheck } from '../http/access.js';
import type { Admissions, Answer } from '../http/admission.js';
import { clientOf } from '../http/client.js';
import { modelMetadata, tensorSpec } from '../http/v2-codec.js';
import { infer } from '../inference.js';
import type { ModelRepository } from '../repository.js';
import { SERVICE_NAME } from '../version.js';
import type { Caller, InferenceBackend } from './backend.js';
import { decodeModelInfer, encodeModelInfer } from './codec.js';

export interface BackendParts {
  readonly repository: ModelRepository;
  /** The instances REST uses (app.ts ServingParts). */
  readonly admissions: Admissions;
  readonly detection: Detection;
  readonly access: AccessCheck | null;
  readonly maxImagesPerRequest: number;
  /** Where detections are logged. */
  readonly log: DetectionLog;
}

/** The call's end stands for the HTTP answer's connection: the admission slot is held until then. */
const answerOf = (ended: AbortSignal): Answer => ({
  once: (_event, release) => ended.addEventListener('abort', release, { once: true }),
});

/** gRPC's empty version is REST's absent one: the serving version. */
const versionOf = (version: string) => (version === '' ? undefined : version);

export function repositoryBackend({ repository, admissions, detection, access, maxImagesPerRequest, log }: BackendParts): InferenceBackend {
  return {
    ready() {
      try {
        repository.checkReady();
        return true;
      } catch (err) {
        if (err instanceof UnavailableError) return false;
        throw err;
      }
    },

    admit(caller) {
      return clientOf({ clientKey: access?.(caller) ?? null, ip: caller.ip });
    },

    model(name, version) {
      // serving: REST's closing server answers 503 while it drains; so does this.
      const { manifest } = repository.serving(name, versionOf(version));
      return { name: manifest.name, metadata: modelMetadata(manifest, SERVICE_NAME) };
    },

    infer(request, caller, { client, trace }) {
      const name = request.model_name;
      const version = versionOf(request.model_version);
      repository.serving(name, version);
      return repository.use(name, version, async (ensemble) => {
        const { manifest } = ensemble;
        const spec = tensorSpec(manifest, maxImagesPerRequest);
        const batch = decodeModelInfer(request, spec);
        // A call that has already ended would never release a slot taken now.
        if (caller.ended.aborted) throw new UnavailableError('cancelled', 'the call ended before inference started');
        const steps = { model: manifest.name, ensemble, admission: admissions.of(manifest.name), detection };
        const { answer: response, n, detection: notice } = await infer(steps, {
          client, answer: answerOf(caller.ended), log, trace,
          batch: () => batch,
          encode: (probabilities) => encodeModelInfer(batch, probabilities, spec.model, manifest.labels),
        });
        return { response, images: n, detection: notice };
      });
    },
  };
}
