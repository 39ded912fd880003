{{/*
Names, labels and rendered settings shared by the codraft templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "codraft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: fullnameOverride, or release-chart (just the release name when it
already contains the chart name). Kept to 40 characters so that "<prefix>-docnode-NN" and
the pod names of the StatefulSet stay valid DNS labels.
*/}}
{{- define "codraft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "codraft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "codraft.labels" -}}
helm.sh/chart: {{ include "codraft.chart" . }}
app.kubernetes.io/name: {{ include "codraft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codraft
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "gateway"). */}}
{{- define "codraft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codraft.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "codraft.gateway.fullname" -}}
{{- printf "%s-gateway" (include "codraft.fullname" .) }}
{{- end }}

{{- define "codraft.docnode.fullname" -}}
{{- printf "%s-docnode" (include "codraft.fullname" .) }}
{{- end }}

{{/* The Secret the chart creates for the URLs given in values. */}}
{{- define "codraft.secretName" -}}
{{- printf "%s-urls" (include "codraft.fullname" .) }}
{{- end }}

{{/* Whether the chart must create its Secret (some URL is given inline). */}}
{{- define "codraft.createSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.redis.existingSecret) }}true{{ end }}
{{- end }}

{{/* image: include with (dict "ctx" $ "image" .Values.gateway.image). */}}
{{- define "codraft.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* DATABASE_URL from the chart's Secret or the existing one. */}}
{{- define "codraft.env.databaseUrl" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.database.existingSecret }}
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
      {{- else }}
      name: {{ include "codraft.secretName" . }}
      key: DATABASE_URL
      {{- end }}
{{- end }}

{{/* REDIS_URL from the chart's Secret or the existing one. */}}
{{- define "codraft.env.redisUrl" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.redis.existingSecret }}
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
      {{- else }}
      name: {{ include "codraft.secretName" . }}
      key: REDIS_URL
      {{- end }}
{{- end }}

{{/*
The stable DNS name of docnode pod i, include with (dict "ctx" $ "i" 0):
<fullname>-docnode-<i>.<fullname>-docnode.<namespace>.svc.<clusterDomain>
*/}}
{{- define "codraft.docnode.host" -}}
{{- $sts := include "codraft.docnode.fullname" .ctx -}}
{{- printf "%s-%d.%s.%s.svc.%s" $sts (int .i) $sts .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}

{{/*
DOCNODES (membership.mode=static): NODE_ID=URL for every StatefulSet ordinal. NODE_ID is the
pod name, which each docnode gets through the downward API, so the static ring names the same
nodes that register in Redis.
*/}}
{{- define "codraft.docnodes" -}}
{{- $sts := include "codraft.docnode.fullname" . -}}
{{- $entries := list -}}
{{- range $i := until (int .Values.docnode.replicaCount) -}}
{{- $host := include "codraft.docnode.host" (dict "ctx" $ "i" $i) -}}
{{- $entries = append $entries (printf "%s-%d=%s://%s:%d" $sts $i (include "codraft.grpc.scheme" $) $host (int $.Values.docnode.grpcPort)) -}}
{{- end -}}
{{- join "," $entries -}}
{{- end }}

{{/*
Membership settings, the same for gateways and docnodes: DOCNODES only in static mode (it
takes precedence over Redis discovery in both binaries).
*/}}
{{- define "codraft.membershipConfig" -}}
{{- if eq .Values.membership.mode "static" }}
DOCNODES: {{ include "codraft.docnodes" . | quote }}
{{- end }}
REDIS_PREFIX: {{ .Values.redis.prefix | quote }}
MEMBERSHIP_TTL_MS: {{ .Values.membership.ttlMs | quote }}
{{- end }}

{{/* OTEL_* variables, when an endpoint is configured. */}}
{{- define "codraft.env.otel" -}}
{{- if .ctx.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .ctx.Values.otel.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "codraft-%s" .component | quote }}
{{- range $name, $value := .ctx.Values.otel.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "codraft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "codraft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether JWT uses a shared secret (HS*) rather than a public key file. */}}
{{- define "codraft.jwt.shared" -}}
{{- if hasPrefix "HS" .Values.auth.jwt.algorithm }}true{{ end }}
{{- end }}

{{/* Where the JWT public key is mounted. */}}
{{- define "codraft.jwt.dir" -}}
/etc/codraft/jwt
{{- end }}

{{/* JWT settings of the gateway container (env), when auth.jwt.enabled. */}}
{{- define "codraft.env.jwt" -}}
{{- if .Values.auth.jwt.enabled }}
{{- $secret := required "auth.jwt.existingSecret is required when auth.jwt.enabled: the chart takes no key inline" .Values.auth.jwt.existingSecret }}
{{- if include "codraft.jwt.shared" . }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.auth.jwt.secretKey }}
{{- else }}
- name: JWT_PUBLIC_KEY_FILE
  value: {{ printf "%s/%s" (include "codraft.jwt.dir" .) .Values.auth.jwt.publicKeyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings both workloads share: identity and priority. Include with (dict "ctx" $ "priorityClassName" ...). */}}
{{- define "codraft.podIdentity" -}}
serviceAccountName: {{ include "codraft.serviceAccountName" .ctx }}
automountServiceAccountToken: false
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules: DNS, and one port to optional peers (dict "rule" ...). */}}
{{- define "codraft.networkPolicy.dns" }}
    # Name resolution (cluster DNS), wherever it runs.
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
{{- end }}
{{- define "codraft.networkPolicy.egress" }}
    - ports:
        - port: {{ .rule.port }}
          protocol: TCP
      {{- with .rule.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* The scheme gateways dial docnodes with: https with gRPC mutual TLS. */}}
{{- define "codraft.grpc.scheme" -}}
{{- if .Values.tls.grpc.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* Where the TLS Secret is mounted. */}}
{{- define "codraft.tls.dir" -}}
/etc/codraft/tls
{{- end }}

{{/* Whether the TLS Secret is mounted (any TLS setting names a key in it). */}}
{{- define "codraft.tls.mounted" -}}
{{- $t := .Values.tls }}
{{- if or $t.grpc.enabled $t.databaseCaKey $t.redisCaKey $t.otlpCaKey }}
{{- $_ := required "tls.existingSecret is required when a TLS setting is used: the chart takes no key inline" $t.existingSecret }}true
{{- end }}
{{- end }}

{{/*
TLS settings (env) of a container; `component` is gateway or docnode (only docnodes talk
to Postgres).
*/}}
{{- define "codraft.env.tls" -}}
{{- $t := .ctx.Values.tls }}
{{- $dir := include "codraft.tls.dir" .ctx }}
{{- if and $t.databaseCaKey (eq .component "docnode") }}
- name: DATABASE_CA_FILE
  value: {{ printf "%s/%s" $dir $t.databaseCaKey | quote }}
{{- end }}
{{- if $t.redisCaKey }}
- name: REDIS_CA_FILE
  value: {{ printf "%s/%s" $dir $t.redisCaKey | quote }}
{{- end }}
{{- if $t.otlpCaKey }}
- name: OTEL_EXPORTER_OTLP_CERTIFICATE
  value: {{ printf "%s/%s" $dir $t.otlpCaKey | quote }}
{{- end }}
{{- if $t.grpc.enabled }}
- name: GRPC_TLS_CERT_FILE
  value: {{ printf "%s/%s" $dir $t.grpc.certKey | quote }}
- name: GRPC_TLS_KEY_FILE
  value: {{ printf "%s/%s" $dir $t.grpc.keyKey | quote }}
- name: GRPC_TLS_CA_FILE
  value: {{ printf "%s/%s" $dir $t.grpc.caKey | quote }}
{{- end }}
{{- end }}
