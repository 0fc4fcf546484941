import CoreMetrics
import Prometheus

/// What a metric means and, for a timer, its buckets: the one place a metric's HELP line is
/// written (swift-prometheus refuses two different help texts for one name).
public struct MetricDescription: Sendable {
    public let help: String
    let buckets: [Duration]

    public init(_ help: String, buckets: [Duration] = []) {
        self.help = help
        self.buckets = buckets
    }
}

/// A swift-metrics backend over one Prometheus registry that gives every metric the HELP line
/// and buckets its description has, and the label `volume` (the volume id), so that the files
/// of several mounts can share node_exporter's textfile directory. Counters are Prometheus
/// counters, recorders and meters gauges, timers histograms.
struct DescribedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let volumeLabel: (String, String)
    let descriptions: [String: MetricDescription]

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: descriptions[label]?.help ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: [volumeLabel] + dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: [volumeLabel] + dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: [volumeLabel] + dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: [volumeLabel] + dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(label), labels: [volumeLabel] + dimensions,
                                       buckets: descriptions[label]?.buckets ?? [])
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
