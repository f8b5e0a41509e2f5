{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "marketdata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "marketdata.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "marketdata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a component's objects: <fullname>-<component>. Call with (list $ "ingest"). */}}
{{- define "marketdata.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "marketdata.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) | trunc 63 | trimSuffix "-" }}
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

{{/* Secret and key holding DATABASE_URL. */}}
{{- define "marketdata.databaseSecretName" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecret }}{{ .Values.externalDatabase.existingSecret }}{{ else }}{{ include "marketdata.fullname" . }}{{ end }}
{{- end }}
{{- define "marketdata.databaseSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecret }}{{ .Values.externalDatabase.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
{{- end }}

{{/* Secret and key holding NATS_URL. */}}
{{- define "marketdata.natsSecretName" -}}
{{- if and (not .Values.nats.enabled) .Values.externalNats.existingSecret }}{{ .Values.externalNats.existingSecret }}{{ else }}{{ include "marketdata.fullname" . }}{{ end }}
{{- end }}
{{- define "marketdata.natsSecretKey" -}}
{{- if and (not .Values.nats.enabled) .Values.externalNats.existingSecret }}{{ .Values.externalNats.existingSecretKey }}{{ else }}NATS_URL{{ end }}
{{- end }}

{{/*
True when the migration Job runs as a pre-install/pre-upgrade hook: with an external database,
which exists before the release, so the services only roll out on a migrated schema.
*/}}
{{- define "marketdata.migrateAsHook" -}}
{{- if and .Values.migrations.enabled (not .Values.postgresql.enabled) }}true{{ end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; `fail` with a message that says what to set.
Included by every template that depends on them.
*/}}
{{- define "marketdata.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.url) (not .Values.externalDatabase.existingSecret) }}
{{- fail "postgresql.enabled is false but no external database is configured: set externalDatabase.url (postgresql://user:password@host:5432/db) or externalDatabase.existingSecret (a Secret with the URL under externalDatabase.existingSecretKey), or set postgresql.enabled=true" }}
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

{{/* Address (host:port) of a gRPC component for clients inside the cluster. */}}
{{- define "marketdata.address" -}}
{{- $root := index . 0 }}{{ $name := index . 1 }}
{{- printf "%s:%v" (include "marketdata.componentName" (list $root $name)) (index $root.Values.services $name).port }}
{{- end }}

{{/* Environment shared by every process and the migration Job (the data of the ConfigMap). */}}
{{- define "marketdata.configData" -}}
BIND_HOST: "0.0.0.0"
LOG_FORMAT: {{ .Values.config.logFormat | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
MD_STREAM: {{ .Values.config.stream | quote }}
MD_SUBJECT_PREFIX: {{ .Values.config.subjectPrefix | quote }}
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
{{- range $key, $value := .Values.config.extraEnv }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/*
Environment from Secrets. Call with (dict "root" $ "database" true "nats" true "auth" true
"databaseSecret" "optional-override").
*/}}
{{- define "marketdata.secretEnv" -}}
{{- $root := .root }}
{{- if .database }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "marketdata.databaseSecretName" $root) .databaseSecret }}
      key: {{ include "marketdata.databaseSecretKey" $root }}
{{- end }}
{{- if .nats }}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "marketdata.natsSecretName" $root }}
      key: {{ include "marketdata.natsSecretKey" $root }}
{{- end }}
{{- if .auth }}
- name: API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "marketdata.authSecretName" $root }}
      key: API_KEYS
- name: FEEDER_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "marketdata.authSecretName" $root }}
      key: FEEDER_API_KEY
      optional: true
{{- end }}
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
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
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
