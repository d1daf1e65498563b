/**
 * Counters, gauges and histograms of the server, rendered in the Prometheus
 * text exposition format for `GET /metrics`.
 *
 * @module
 */

/** Bucket bounds in seconds for upload and index durations. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** A Prometheus histogram with fixed buckets. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[] = DURATION_BUCKETS) {
    this.#bounds = bounds;
    this.#counts = bounds.map(() => 0);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.#bounds.length; i++) {
      if (value <= this.#bounds[i]!) this.#counts[i]!++;
    }
  }

  /** Number of observations. */
  get count(): number {
    return this.#count;
  }

  /** The exposition lines of this histogram under `name`. */
  render(name: string): string[] {
    const lines = this.#bounds.map((bound, i) =>
      `${name}_bucket{le="${bound}"} ${this.#counts[i]}`
    );
    lines.push(`${name}_bucket{le="+Inf"} ${this.#count}`);
    lines.push(`${name}_sum ${this.#sum}`, `${name}_count ${this.#count}`);
    return lines;
  }
}

/** What the server counts. */
export class Metrics {
  /** Finished uploads by outcome (`published`, `replaced`, or the HTTP status of a refusal). */
  readonly uploads = new Map<string, number>();
  /** Packages published or replaced, by identity (token or trusted publisher name). */
  readonly publishedBy = new Map<string, number>();
  /** Package deletions. */
  deletes = 0;
  /** Bytes of artifacts received into spool files. */
  bytesReceived = 0;
  /** Uploads being received or processed now. */
  uploadsInFlight = 0;
  /** Requests refused for a missing or wrong token. */
  failedAuth = 0;
  /** Failed token attempts whose answer the throttle holds back now. */
  authHeld = 0;
  /** Form uploads waiting for their token field now. */
  awaitingToken = 0;
  /** Seconds from request to answer of uploads. */
  readonly uploadDuration = new Histogram();
  /** Seconds spent updating the index per upload. */
  readonly indexDuration = new Histogram();

  /** Counts one finished upload. */
  countUpload(outcome: string): void {
    this.uploads.set(outcome, (this.uploads.get(outcome) ?? 0) + 1);
  }

  /** Counts one package published or replaced by `identity`. */
  countPublished(identity: string): void {
    this.publishedBy.set(identity, (this.publishedBy.get(identity) ?? 0) + 1);
  }

  /** The Prometheus text exposition of every metric. */
  render(): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, values: string[]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...values);
    };
    metric(
      "auh_uploads_total",
      "counter",
      "Finished uploads by outcome.",
      [...this.uploads].sort().map(([outcome, count]) =>
        `auh_uploads_total{outcome="${outcome}"} ${count}`
      ),
    );
    metric(
      "auh_published_total",
      "counter",
      "Packages published or replaced, by the token's or trusted publisher's name.",
      [...this.publishedBy].sort().map(([identity, count]) =>
        `auh_published_total{identity="${labelValue(identity)}"} ${count}`
      ),
    );
    metric("auh_deletes_total", "counter", "Packages deleted.", [
      `auh_deletes_total ${this.deletes}`,
    ]);
    metric("auh_received_bytes_total", "counter", "Artifact bytes received.", [
      `auh_received_bytes_total ${this.bytesReceived}`,
    ]);
    metric("auh_uploads_in_flight", "gauge", "Uploads in progress.", [
      `auh_uploads_in_flight ${this.uploadsInFlight}`,
    ]);
    metric("auh_auth_failures_total", "counter", "Requests with a missing or wrong token.", [
      `auh_auth_failures_total ${this.failedAuth}`,
    ]);
    metric("auh_auth_held", "gauge", "Failed token attempts whose answer is held back.", [
      `auh_auth_held ${this.authHeld}`,
    ]);
    metric("auh_awaiting_token", "gauge", "Form uploads waiting for their token field.", [
      `auh_awaiting_token ${this.awaitingToken}`,
    ]);
    metric(
      "auh_upload_duration_seconds",
      "histogram",
      "Upload request duration.",
      this.uploadDuration.render("auh_upload_duration_seconds"),
    );
    metric(
      "auh_index_duration_seconds",
      "histogram",
      "Index update duration per upload.",
      this.indexDuration.render("auh_index_duration_seconds"),
    );
    return lines.join("\n") + "\n";
  }
}

/** A Prometheus label value: backslash, quote and newline escaped. */
function labelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
