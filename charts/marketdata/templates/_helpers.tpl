{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "marketdata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A name of at most <max> characters (Kubernetes: 63 for a DNS label, a Service or a label value; 52 for a
StatefulSet, whose pods carry a controller-revision-hash label of <name>-<10 characters>): the name itself
when it fits, else its beginning and the first 8 hex digits of the whole name's sha256, so that two long
names which differ only at the end (…-01, …-02) stay distinct. Call with (list "name" max).
*/}}
{{- define "marketdata.fitName" -}}
{{- $name := index . 0 | trimSuffix "-" }}{{ $max := int (index . 1) }}
{{- if le (len $name) $max }}{{ $name }}
{{- else }}{{ printf "%s-%s" (trunc (int (sub $max 9)) $name | trimSuffix "-") (sha256sum $name | trunc 8) }}{{ end }}
{{- end }}

{{/* The untruncated base of every object name: <release>-<chart>, the release name when it already contains
the chart name, or fullnameOverride. */}}
{{- define "marketdata.baseName" -}}
{{- if .Values.fullnameOverride }}{{ .Values.fullnameOverride }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}{{ .Release.Name }}{{ else }}{{ printf "%s-%s" .Release.Name $name }}{{ end }}
{{- end }}
{{- end }}

{{/* Full name (the release's ConfigMap, Secret, monitoring objects): the base name, fitted to 63 characters. */}}
{{- define "marketdata.fullname" -}}
{{- include "marketdata.fitName" (list (include "marketdata.baseName" .) 63) }}
{{- end }}

{{- define "marketdata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of a component's objects: <base>-<component>, fitted to 63 characters; to 52 for the StatefulSets
(nats, postgresql) and to 50 for the CloudNativePG Cluster ("db", the operator's limit). Call with (list $ "ingest").
*/}}
{{- define "marketdata.componentName" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}
{{- $max := 63 }}
{{- if has $component (list "nats" "postgresql") }}{{ $max = 52 }}{{ else if eq $component "db" }}{{ $max = 50 }}{{ end }}
{{- include "marketdata.fitName" (list (printf "%s-%s" (include "marketdata.baseName" $root) $component) $max) }}
{{- end }}

{{/* Standard labels. Call with (list $ "component"). */}}
{{- define "marketdata.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "marketdata.chart" $root }}
{{ include "marketdata.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: {{ include "marketdata.name" $root }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels (immutable on Deployments and StatefulSets). Call with (list $ "component"). */}}
{{- define "marketdata.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "marketdata.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The application image: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "marketdata.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secret holding API_KEYS (and FEEDER_API_KEY). */}}
{{- define "marketdata.authSecretName" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}{{ else }}{{ include "marketdata.fullname" . }}{{ end }}
{{- end }}

{{/* Secret and key of the in-chart PostgreSQL's password (generated and kept, or existing). */}}
{{- define "marketdata.postgresqlSecretName" -}}
{{- if .Values.postgresql.existingSecret }}{{ .Values.postgresql.existingSecret }}{{ else }}{{ include "marketdata.componentName" (list . "postgresql") }}{{ end }}
{{- end }}
{{- define "marketdata.postgresqlSecretKey" -}}
{{- if .Values.postgresql.existingSecret }}{{ .Values.postgresql.existingSecretKey }}{{ else }}password{{ end }}
{{- end }}

{{/* Name of the CloudNativePG Cluster; the operator keeps its app credentials in <name>-app. */}}
{{- define "marketdata.cnpgName" -}}
{{- include "marketdata.componentName" (list . "db") }}
{{- end }}

{{/* Secret and key holding DATABASE_URL (external database or CloudNativePG). */}}
{{- define "marketdata.databaseSecretName" -}}
{{- if .Values.cloudnativepg.enabled }}{{ include "marketdata.cnpgName" . }}-app
{{- else if .Values.externalDatabase.existingSecret }}{{ .Values.externalDatabase.existingSecret }}
{{- else }}{{ include "marketdata.fullname" . }}{{ end }}
{{- end }}
{{- define "marketdata.databaseSecretKey" -}}
{{- if .Values.cloudnativepg.enabled }}uri
{{- else if .Values.externalDatabase.existingSecret }}{{ .Values.externalDatabase.existingSecretKey }}
{{- else }}DATABASE_URL{{ end }}
{{- end }}

{{/* Secret and key holding NATS_URL. */}}
{{- define "marketdata.natsSecretName" -}}
{{- if and (not .Values.nats.enabled) .Values.externalNats.existingSecret }}{{ .Values.externalNats.existingSecret }}{{ else }}{{ include "marketdata.fullname" . }}{{ end }}
{{- end }}
{{- define "marketdata.natsSecretKey" -}}
{{- if and (not .Values.nats.enabled) .Values.externalNats.existingSecret }}{{ .Values.externalNats.existingSecretKey }}{{ else }}NATS_URL{{ end }}
{{- end }}

{{/*
Data of the release's own Secret (base64 values): API_KEYS and FEEDER_API_KEY unless auth.existingSecret,
DATABASE_URL of externalDatabase.url, NATS_URL of the in-chart or externalNats.url NATS. Deterministic (no
generated values), so the pods' checksums of it change exactly when it does.
*/}}
{{- define "marketdata.secretData" -}}
{{- if not .Values.auth.existingSecret }}
API_KEYS: {{ .Values.auth.apiKeys | b64enc | quote }}
FEEDER_API_KEY: {{ default (first (splitList "," .Values.auth.apiKeys) | trim) .Values.auth.feederApiKey | b64enc | quote }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.cloudnativepg.enabled) .Values.externalDatabase.url }}
DATABASE_URL: {{ .Values.externalDatabase.url | b64enc | quote }}
{{- end }}
{{- if .Values.nats.enabled }}
NATS_URL: {{ printf "nats://%s:4222" (include "marketdata.componentName" (list . "nats")) | b64enc | quote }}
{{- else if .Values.externalNats.url }}
NATS_URL: {{ .Values.externalNats.url | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Kubernetes quantity (1536Mi, 2Gi, 1G, 1048576) to bytes. Call with the quantity; "" gives -1 (no limit).
*/}}
{{- define "marketdata.bytes" -}}
{{- $q := toString . }}
{{- if eq $q "" }}-1
{{- else }}
{{- $number := regexFind "^[0-9]+" $q }}
{{- $unit := trimPrefix $number $q }}
{{- $units := dict "" 1 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $number) (not (hasKey $units $unit)) }}
{{- fail (printf "%q is not a size: use a Kubernetes quantity such as 512Mi, 2Gi or 1G" $q) }}
{{- end }}
{{- mul (int64 $number) (index $units $unit) }}
{{- end }}
{{- end }}

{{/* Replicas of the JetStream streams: config.streamReplicas, or 3 on an in-chart NATS cluster. */}}
{{- define "marketdata.streamReplicas" -}}
{{- if .Values.config.streamReplicas }}{{ .Values.config.streamReplicas }}
{{- else if and .Values.nats.enabled (ge (int .Values.nats.replicas) 3) }}3
{{- else }}1{{ end }}
{{- end }}

{{/*
Rolling update of every Deployment (services.yaml renders it from here, the connection budget reads maxSurge):
no pod goes before its replacement is Ready, one extra pod per component during a rollout.
*/}}
{{- define "marketdata.rollingUpdate" -}}
maxUnavailable: 0
maxSurge: 1
{{- end }}

{{/*
Pods of a component at most: autoscaling.maxReplicas (HPA or KEDA), else replicaCount; plus the rolling
update's maxSurge, which a rollout at that maximum adds. Output: "<pods>|<replicas>|<surge>".
*/}}
{{- define "marketdata.maxPods" -}}
{{- $root := index . 0 }}{{ $name := index . 1 }}{{ $svc := index $root.Values.services $name }}
{{- $replicas := int $svc.replicaCount }}
{{- if and (eq $name "aggregator") $root.Values.keda.enabled }}{{ $replicas = int $root.Values.keda.maxReplicas }}
{{- else if $svc.autoscaling.enabled }}{{ $replicas = int $svc.autoscaling.maxReplicas }}{{ end }}
{{- $surge := 0 }}
{{- if gt $replicas 0 }}{{ $surge = int (include "marketdata.rollingUpdate" $root | fromYaml).maxSurge }}{{ end }}
{{- printf "%d|%d|%d" (add $replicas $surge) $replicas $surge }}
{{- end }}

{{/*
PostgreSQL connections the release may open at most: per component talking to PostgreSQL, its pods at most
(maximum replicas + the rollout's surge) x (dbPoolSize + the connections it holds outside the pool: ingest's
LISTEN), plus the migration Job's one.
Output: "<total>|<explanation>".
*/}}
{{- define "marketdata.connectionBudget" -}}
{{- $root := . }}
{{- $outside := dict "ingest" 1 }}
{{- $total := 0 }}
{{- $parts := list }}
{{- range $name, $svc := .Values.services }}
{{- if and $svc.enabled (has "postgresql" $svc.egressTo) }}
{{- $max := splitList "|" (include "marketdata.maxPods" (list $root $name)) }}
{{- $pods := int (index $max 0) }}
{{- $each := add (int (default 10 $svc.dbPoolSize)) (int (default 0 (index $outside $name))) }}
{{- $total = add $total (mul $pods $each) }}
{{- $parts = append $parts (printf "%s %d pods (%s + %s surge) x %d" $name $pods (index $max 1) (index $max 2) $each) }}
{{- end }}
{{- end }}
{{- if .Values.migrations.enabled }}
{{- $total = add $total 1 }}
{{- $parts = append $parts "migrate 1" }}
{{- end }}
{{- printf "%d|%s" $total (join " + " $parts) }}
{{- end }}

{{/*
True when the migration Job runs as a pre-install/pre-upgrade hook: with an external database,
which exists before the release, so the services only roll out on a migrated schema.
*/}}
{{- define "marketdata.migrateAsHook" -}}
{{- if and .Values.migrations.enabled (not .Values.postgresql.enabled) (not .Values.cloudnativepg.enabled) }}true{{ end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; `fail` with a message that says what to set.
Included by every template that depends on them.
*/}}
{{- define "marketdata.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.cloudnativepg.enabled) (not .Values.externalDatabase.url) (not .Values.externalDatabase.existingSecret) }}
{{- fail "postgresql.enabled is false but no external database is configured: set externalDatabase.url (postgresql://user:password@host:5432/db) or externalDatabase.existingSecret (a Secret with the URL under externalDatabase.existingSecretKey), or cloudnativepg.enabled=true, or set postgresql.enabled=true" }}
{{- end }}
{{- if and .Values.cloudnativepg.enabled (or .Values.postgresql.enabled .Values.externalDatabase.url .Values.externalDatabase.existingSecret) }}
{{- fail "cloudnativepg.enabled is true: set postgresql.enabled=false and leave externalDatabase empty (the services read the CloudNativePG app Secret)" }}
{{- end }}
{{- if not (or (trim .Values.auth.apiKeys) .Values.auth.existingSecret) }}
{{- fail "auth.apiKeys is empty and auth.existingSecret is not set: ingest and the aggregator do not start without API keys. Set auth.apiKeys to the comma-separated keys producers send in x-api-key (e.g. --set auth.apiKeys=$(openssl rand -hex 16)), or auth.existingSecret to a Secret holding them under API_KEYS" }}
{{- end }}
{{- if and .Values.postgresql.password .Values.postgresql.existingSecret }}
{{- fail "postgresql.password and postgresql.existingSecret are both set: give one" }}
{{- end }}
{{- $budget := splitList "|" (include "marketdata.connectionBudget" .) }}
{{- $limit := sub (int .Values.postgresql.maxConnections) 3 }}
{{- if gt (int (first $budget)) (int $limit) }}
{{- fail (printf "PostgreSQL connection budget exceeded: %s = %s connections, more than postgresql.maxConnections %d minus 3 reserved for superusers: lower services.<name>.dbPoolSize or the replicas (replicaCount, autoscaling.maxReplicas, keda.maxReplicas), or raise postgresql.maxConnections to what your server allows" (last $budget) (first $budget) (int .Values.postgresql.maxConnections)) }}
{{- end }}
{{- $streamReplicas := int (include "marketdata.streamReplicas" .) }}
{{- if and .Values.nats.enabled (gt $streamReplicas (int .Values.nats.replicas)) }}
{{- fail (printf "config.streamReplicas %d is more than the in-chart NATS's nats.replicas %d" $streamReplicas (int .Values.nats.replicas)) }}
{{- end }}
{{- if .Values.nats.enabled }}
{{- $volume := int64 (include "marketdata.bytes" .Values.nats.persistence.size) }}
{{- $maxFile := int64 (include "marketdata.bytes" .Values.nats.jetstream.maxFile) }}
{{- if ge $maxFile $volume }}
{{- fail (printf "nats.jetstream.maxFile %s must be below nats.persistence.size %s: JetStream must hit its own limit (and drop old messages) before the disk is full" .Values.nats.jetstream.maxFile .Values.nats.persistence.size) }}
{{- end }}
{{- $streams := add (int64 (include "marketdata.bytes" .Values.config.streamMaxBytes)) (int64 (include "marketdata.bytes" .Values.config.deadletterMaxBytes)) }}
{{- if or (lt (int64 (include "marketdata.bytes" .Values.config.streamMaxBytes)) 0) (lt (int64 (include "marketdata.bytes" .Values.config.deadletterMaxBytes)) 0) (gt $streams $maxFile) }}
{{- fail (printf "config.streamMaxBytes %s + config.deadletterMaxBytes %s must be set and fit in nats.jetstream.maxFile %s" (toString .Values.config.streamMaxBytes) (toString .Values.config.deadletterMaxBytes) .Values.nats.jetstream.maxFile) }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled .Values.services.aggregator.autoscaling.enabled }}
{{- fail "keda.enabled and services.aggregator.autoscaling.enabled are both set: KEDA creates the aggregator's HorizontalPodAutoscaler itself; disable one" }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.nats.enabled) (not .Values.keda.natsMonitoringEndpoint) }}
{{- fail "keda.enabled with an external NATS: set keda.natsMonitoringEndpoint (host:8222 of your NATS monitoring)" }}
{{- end }}
{{- if and .Values.gateway.enabled (not .Values.gateway.parentRefs) }}
{{- fail "gateway.enabled: set gateway.parentRefs to the Gateway the routes attach to" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor and monitoring.podMonitor are both enabled: every target would be scraped twice; pick one" }}
{{- end }}
{{- if and .Values.postgresql.enabled (or .Values.externalDatabase.url .Values.externalDatabase.existingSecret) }}
{{- fail "externalDatabase is set while postgresql.enabled is true: set postgresql.enabled=false to use the external database" }}
{{- end }}
{{- if and (not .Values.nats.enabled) (not .Values.externalNats.url) (not .Values.externalNats.existingSecret) }}
{{- fail "nats.enabled is false but no external NATS is configured: set externalNats.url (nats://host:4222) or externalNats.existingSecret, or set nats.enabled=true" }}
{{- end }}
{{- if and .Values.nats.enabled (or .Values.externalNats.url .Values.externalNats.existingSecret) }}
{{- fail "externalNats is set while nats.enabled is true: set nats.enabled=false to use the external NATS" }}
{{- end }}
{{- $reserved := include "marketdata.reservedEnv" . | fromYaml }}
{{- range $key, $_ := .Values.config.extraEnv }}
{{- if hasKey $reserved $key }}
{{- fail (printf "config.extraEnv.%s: the chart sets %s itself; set %s instead (config.extraEnv may override only LOG_LEVEL, LOG_FORMAT, CORS_ORIGINS, BIND_HOST, GRPC_MAX_CONNECTION_AGE_SECONDS, GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS and variables the chart does not set)" $key $key (index $reserved $key | replace "<name>" "<service>")) }}
{{- end }}
{{- end }}
{{- $envs := dict "migrations" .Values.migrations.env }}
{{- range $name, $svc := .Values.services }}{{ $_ := set $envs (printf "services.%s" $name) $svc.env }}{{ end }}
{{- range $where, $env := $envs }}
{{- range $key, $_ := $env }}
{{- if hasKey $reserved $key }}
{{- fail (printf "%s.env.%s: the chart sets %s itself; set %s instead (env may override only LOG_LEVEL, LOG_FORMAT, CORS_ORIGINS, BIND_HOST, GRPC_MAX_CONNECTION_AGE_SECONDS, GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS and variables the chart does not set)" $where $key $key (index $reserved $key | replace "services.<name>" (ternary "services.<service>" $where (eq $where "migrations")))) }}
{{- end }}
{{- end }}
{{- end }}
{{- $volumeOwners := dict "migrations" .Values.migrations }}
{{- range $name, $svc := .Values.services }}{{ $_ := set $volumeOwners (printf "services.%s" $name) $svc }}{{ end }}
{{- range $where, $owner := $volumeOwners }}
{{- range $volume := $owner.extraVolumes }}
{{- if eq $volume.name "tmp" }}
{{- fail (printf "%s.extraVolumes: the name tmp is the chart's own /tmp volume; pick another" $where) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create is false: set serviceAccount.name to the existing ServiceAccount the application's pods run as" }}
{{- end }}
{{- range $name, $svc := .Values.services }}
{{- if and $svc.enabled (ne $svc.protocol "none") (not $svc.port) }}
{{- fail (printf "services.%s: protocol %s needs a port" $name $svc.protocol) }}
{{- end }}
{{- if and $svc.enabled (eq $svc.protocol "grpc") (not $svc.healthService) }}
{{- fail (printf "services.%s: protocol grpc needs healthService (the gRPC health service name its probes ask for)" $name) }}
{{- end }}
{{- if and $svc.service.nodePort (eq $svc.service.type "ClusterIP") }}
{{- fail (printf "services.%s.service.nodePort is set but service.type is ClusterIP: use NodePort" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Address (host:port) of a gRPC component for clients inside the cluster: its headless Service,
whose DNS name resolves to every ready pod, so clients balance their calls over the replicas.
*/}}
{{- define "marketdata.address" -}}
{{- $root := index . 0 }}{{ $name := index . 1 }}
{{- printf "%s:%v" (include "marketdata.headlessName" (list $root $name)) (index $root.Values.services $name).port }}
{{- end }}
{{/* The headless Service of a component, fitted to 63 characters. Call with (list $ "ingest"). */}}
{{- define "marketdata.headlessName" -}}
{{- include "marketdata.fitName" (list (printf "%s-headless" (include "marketdata.componentName" .)) 63) }}
{{- end }}

{{/*
Environment shared by every process and the migration Job (the data of the ConfigMap): the chart's keys, with
config.extraEnv added; where extraEnv names one of the chart's keys that it may override (LOG_LEVEL, …: the
others are refused by marketdata.validate), its value replaces the chart's, so each key is there once.
*/}}
{{- define "marketdata.configData" -}}
{{- $data := include "marketdata.chartConfigData" . | fromYaml }}
{{- range $key, $value := .Values.config.extraEnv }}{{ $_ := set $data $key $value }}{{ end }}
{{- $lines := list }}
{{- range $key, $value := $data }}{{ $lines = append $lines (printf "%s: %s" $key ($value | quote)) }}{{ end }}
{{- join "\n" $lines }}
{{- end }}

{{- define "marketdata.chartConfigData" -}}
BIND_HOST: "0.0.0.0"
LOG_FORMAT: {{ .Values.config.logFormat | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
MD_STREAM: {{ .Values.config.stream | quote }}
MD_SUBJECT_PREFIX: {{ .Values.config.subjectPrefix | quote }}
MD_CONSUMER: {{ .Values.config.consumer | quote }}
MD_STREAM_REPLICAS: {{ include "marketdata.streamReplicas" . | quote }}
MD_STREAM_MAX_BYTES: {{ include "marketdata.bytes" .Values.config.streamMaxBytes | quote }}
MD_STREAM_MAX_AGE_SECONDS: {{ .Values.config.streamMaxAgeSeconds | quote }}
MD_DEADLETTER_MAX_BYTES: {{ include "marketdata.bytes" .Values.config.deadletterMaxBytes | quote }}
SHUTDOWN_GRACE_SECONDS: {{ .Values.config.shutdownGraceSeconds | quote }}
METRICS_PORT: {{ .Values.config.metricsPort | quote }}
CORS_ORIGINS: {{ .Values.config.corsOrigins | quote }}
INGEST_PORT: {{ .Values.services.ingest.port | quote }}
QUERY_PORT: {{ .Values.services.query.port | quote }}
AGGREGATOR_PORT: {{ .Values.services.aggregator.port | quote }}
EDGE_PORT: {{ .Values.services.edge.port | quote }}
INGEST_ADDR: {{ include "marketdata.address" (list . "ingest") | quote }}
QUERY_ADDR: {{ include "marketdata.address" (list . "query") | quote }}
AGGREGATOR_ADDR: {{ include "marketdata.address" (list . "aggregator") | quote }}
GRPC_MAX_CONNECTION_AGE_SECONDS: {{ .Values.config.grpcMaxConnectionAgeSeconds | quote }}
GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS: {{ .Values.config.grpcMaxConnectionAgeGraceSeconds | quote }}
{{- end }}

{{/*
Environment variables the chart sets from its own values (or derives), and the value to set instead:
config.extraEnv and services.<name>.env / migrations.env may not name them (marketdata.validate fails the
render), so each reaches the pods once and through the chart's checks (the connection budget, the NATS limits,
the probes' ports, KEDA's consumer). LOG_LEVEL, LOG_FORMAT, CORS_ORIGINS, BIND_HOST and the GRPC_MAX_* ages
are not here: extraEnv overrides them release-wide, a service's env for that service.
*/}}
{{- define "marketdata.reservedEnv" -}}
DATABASE_URL: "externalDatabase.url or externalDatabase.existingSecret (or the in-chart PostgreSQL, CloudNativePG)"
PGPASSWORD: "postgresql.password or postgresql.existingSecret"
NATS_URL: "externalNats.url or externalNats.existingSecret (or the in-chart NATS)"
API_KEYS: "auth.apiKeys or auth.existingSecret"
API_KEY: "auth.apiKeys or auth.existingSecret"
FEEDER_API_KEY: "auth.feederApiKey or auth.existingSecret"
DB_POOL_SIZE: "services.<name>.dbPoolSize, which the PostgreSQL connection budget counts"
MD_STREAM: "config.stream"
MD_SUBJECT_PREFIX: "config.subjectPrefix"
MD_CONSUMER: "config.consumer"
MD_STREAM_REPLICAS: "config.streamReplicas"
MD_STREAM_MAX_BYTES: "config.streamMaxBytes"
MD_STREAM_MAX_AGE_SECONDS: "config.streamMaxAgeSeconds"
MD_DEADLETTER_MAX_BYTES: "config.deadletterMaxBytes"
SHUTDOWN_GRACE_SECONDS: "config.shutdownGraceSeconds (the termination grace period follows it)"
METRICS_PORT: "config.metricsPort"
INGEST_PORT: "services.ingest.port"
QUERY_PORT: "services.query.port"
AGGREGATOR_PORT: "services.aggregator.port"
EDGE_PORT: "services.edge.port"
INGEST_ADDR: "services.ingest.port (the address is the headless Service's)"
QUERY_ADDR: "services.query.port (the address is the headless Service's)"
AGGREGATOR_ADDR: "services.aggregator.port (the address is the headless Service's)"
{{- end }}

{{/*
env entries from a values map (services.<name>.env, migrations.env): NAME: "literal", or
NAME: {valueFrom: {secretKeyRef: {name, key}}} (configMapKeyRef, fieldRef, resourceFieldRef likewise).
*/}}
{{- define "marketdata.userEnv" -}}
{{- range $key, $value := . }}
- name: {{ $key }}
  {{- if kindIs "map" $value }}
  valueFrom:
    {{- toYaml $value.valueFrom | nindent 4 }}
  {{- else }}
  value: {{ $value | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of every pod of the chart (the application's, the migration's, the test's, NATS and PostgreSQL). */}}
{{- define "marketdata.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling of a pod: the component's own nodeSelector, tolerations, affinity, priorityClassName and
topologySpreadConstraints where it has them (non-empty: it replaces the chart-wide value), else the
chart-wide `scheduling` ones. Spread constraints without a labelSelector get the component's selector labels.
With spread, a pod without an affinity of its own prefers a node without another pod of its component (added
to scheduling.affinity unless that has a podAntiAffinity).
Call with (dict "root" $ "component" "ingest" "own" $svc "spread" true).
*/}}
{{- define "marketdata.scheduling" -}}
{{- $root := .root }}{{ $component := .component }}{{ $g := $root.Values.scheduling }}{{ $own := default dict .own }}
{{- $nodeSelector := default $g.nodeSelector $own.nodeSelector }}
{{- $tolerations := default $g.tolerations $own.tolerations }}
{{- $priority := default $g.priorityClassName $own.priorityClassName }}
{{- $spreads := default $g.topologySpreadConstraints $own.topologySpreadConstraints }}
{{- $affinity := dict }}
{{- if $own.affinity }}{{ $affinity = $own.affinity }}
{{- else }}
{{- $affinity = deepCopy (default dict $g.affinity) }}
{{- if and .spread (not $affinity.podAntiAffinity) }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "marketdata.selectorLabels" (list $root $component) | fromYaml)) }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- with $priority }}
priorityClassName: {{ . }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $spreads }}
{{- $constraints := list }}
{{- range $c := $spreads }}
{{- $c = deepCopy $c }}
{{- if not $c.labelSelector }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "marketdata.selectorLabels" (list $root $component) | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount an application pod runs as, and whether the chart creates it: "<name>|create" or
"<name>|existing". services.<name>.serviceAccount.name / migrations.serviceAccount.name name an existing one
for that pod; serviceAccount.create false runs every application pod as serviceAccount.name; else the chart
creates <base>-<component>. Call with (list $ "component" $own).
*/}}
{{- define "marketdata.serviceAccount" -}}
{{- $root := index . 0 }}{{ $own := default dict (index . 2).serviceAccount }}
{{- if $own.name }}{{ $own.name }}|existing
{{- else if not $root.Values.serviceAccount.create }}{{ $root.Values.serviceAccount.name }}|existing
{{- else }}{{ include "marketdata.componentName" (list $root (index . 1)) }}|create{{ end }}
{{- end }}

{{/* Annotations of a ServiceAccount the chart creates: serviceAccount.annotations with the component's over them. Call with (list $ $own). */}}
{{- define "marketdata.serviceAccountAnnotations" -}}
{{- $root := index . 0 }}{{ $own := default dict (index . 1).serviceAccount }}
{{- with merge (dict) (default dict $own.annotations) $root.Values.serviceAccount.annotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Credentials a process reads, as a YAML list of {name, value} or {name, secret, key}: only what it needs.
Call with (dict "root" $ "database" bool "nats" bool "apiKeys" "accept|send|none" "databaseSecret" "override").
DATABASE_URL for the in-chart PostgreSQL carries no password: PGPASSWORD (read by asyncpg, as by libpq)
comes from the password Secret, so any character is safe in it and the URL needs no lookup.
*/}}
{{- define "marketdata.envRefs" -}}
{{- $root := .root }}{{ $v := $root.Values }}
{{- if .database }}
{{- if $v.postgresql.enabled }}
- name: DATABASE_URL
  value: {{ printf "postgresql://%s@%s:5432/%s" ($v.postgresql.username | urlquery) (include "marketdata.componentName" (list $root "postgresql")) $v.postgresql.database | quote }}
- name: PGPASSWORD
  secret: {{ include "marketdata.postgresqlSecretName" $root }}
  key: {{ include "marketdata.postgresqlSecretKey" $root }}
{{- else }}
- name: DATABASE_URL
  secret: {{ default (include "marketdata.databaseSecretName" $root) .databaseSecret }}
  key: {{ include "marketdata.databaseSecretKey" $root }}
{{- end }}
{{- end }}
{{- if .nats }}
- name: NATS_URL
  secret: {{ include "marketdata.natsSecretName" $root }}
  key: {{ include "marketdata.natsSecretKey" $root }}
{{- end }}
{{- if eq (default "none" .apiKeys) "accept" }}
- name: API_KEYS
  secret: {{ include "marketdata.authSecretName" $root }}
  key: API_KEYS
{{- else if eq (default "none" .apiKeys) "send" }}
- name: FEEDER_API_KEY
  secret: {{ include "marketdata.authSecretName" $root }}
  key: FEEDER_API_KEY
{{- end }}
{{- end }}

{{/* The env entries of envRefs. Call with the same dict. */}}
{{- define "marketdata.secretEnv" -}}
{{- range $ref := include "marketdata.envRefs" . | fromYamlArray }}
- name: {{ $ref.name }}
  {{- if $ref.secret }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
  {{- else }}
  value: {{ $ref.value | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
sha256 of every Secret value a pod reads (call with the dict of envRefs), for its checksum/secrets
annotation: a changed key rolls exactly the pods that read it. The release's own Secret is hashed as
rendered; an existing Secret (auth/externalDatabase/externalNats/postgresql.existingSecret, the CloudNativePG
app Secret) as `helm upgrade` finds it in the cluster (lookup; a render without a cluster, as GitOps tools
do, hashes its name only: roll those pods yourself or use a reloader). The generated PostgreSQL password
never changes once the data is initialised; its checksum part is postgresql.password.
*/}}
{{- define "marketdata.secretChecksum" -}}
{{- $root := .root }}
{{- $fullname := include "marketdata.fullname" $root }}
{{- $own := include "marketdata.secretData" $root | fromYaml }}
{{- $generatedPassword := and $root.Values.postgresql.enabled (not $root.Values.postgresql.existingSecret) }}
{{- $parts := list }}
{{- range $ref := include "marketdata.envRefs" . | fromYamlArray }}
{{- if $ref.secret }}
{{- $value := "" }}
{{- if eq $ref.secret $fullname }}
{{- $value = index $own $ref.key | default "" }}
{{- else if and $generatedPassword (eq $ref.secret (include "marketdata.postgresqlSecretName" $root)) }}
{{- $value = $root.Values.postgresql.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $ref.secret }}
{{- if $existing }}{{ $value = index (default dict $existing.data) $ref.key | default "" }}{{ end }}
{{- end }}
{{- $parts = append $parts (printf "%s/%s=%s" $ref.secret $ref.key $value) }}
{{- end }}
{{- end }}
{{- join ";" $parts | sha256sum }}
{{- end }}

{{/* Pod-level hardening shared by the chart's own pods. */}}
{{- define "marketdata.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{/* checkov skips shared by the application's workloads; each says why. */}}
{{- define "marketdata.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=Images are referenced by version tag by default; set image.digest to pin a digest
checkov.io/skip2: CKV_K8S_35=The processes read their settings (DATABASE_URL, NATS_URL, API_KEYS) from environment variables by contract; values come from Secrets via secretKeyRef, never literals
checkov.io/skip3: CKV_K8S_15=imagePullPolicy is a value (IfNotPresent by default) so that kind and Tilt can use locally loaded images; tags are immutable release versions
{{- end }}

{{/* NetworkPolicy peer: the pods of one component. Call with (list $ "component"). */}}
{{- define "marketdata.peer" -}}
- podSelector:
    matchLabels:
      {{- include "marketdata.selectorLabels" . | nindent 6 }}
{{- end }}
{{- define "marketdata.dnsEgress" -}}
{{- $dns := .Values.networkPolicy.dns -}}
- to:
    {{- if $dns.peers }}
    {{- toYaml $dns.peers | nindent 4 }}
    {{- else }}
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $dns.namespace }}
      {{- with $dns.podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
    {{- end }}
  ports:
    - {port: {{ $dns.port }}, protocol: UDP}
    - {port: {{ $dns.port }}, protocol: TCP}
{{- end }}
{{- /* Egress rules towards the listed components. Call with (list $ (list "nats" "ingest")). */}}
{{- define "marketdata.egressTo" -}}
{{- $root := index . 0 -}}
{{- range $target := index . 1 }}
{{- if eq $target "nats" }}
{{- if $root.Values.nats.enabled }}
- to:
    {{- include "marketdata.peer" (list $root "nats") | nindent 4 }}
  ports:
    - {port: 4222, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ $root.Values.externalNats.port }}, protocol: TCP}
  {{- with $root.Values.networkPolicy.externalNatsPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- else if eq $target "postgresql" }}
{{- if $root.Values.postgresql.enabled }}
- to:
    {{- include "marketdata.peer" (list $root "postgresql") | nindent 4 }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else if $root.Values.cloudnativepg.enabled }}
- to:
    - podSelector:
        matchLabels:
          cnpg.io/cluster: {{ include "marketdata.cnpgName" $root }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ $root.Values.externalDatabase.port }}, protocol: TCP}
  {{- with $root.Values.networkPolicy.externalDatabasePeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- else }}
{{- $svc := index $root.Values.services $target }}
{{- if and $svc $svc.enabled $svc.port }}
- to:
    {{- include "marketdata.peer" (list $root $target) | nindent 4 }}
  ports:
    - {port: {{ $svc.port }}, protocol: TCP}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
