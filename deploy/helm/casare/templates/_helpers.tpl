{{/* Names and labels shared by every object of the chart. */}}

{{- define "casare.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "casare.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "casare.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "casare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "casare.serverSelector" -}}
app.kubernetes.io/name: {{ include "casare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "casare.poolSelector" -}}
app.kubernetes.io/name: {{ include "casare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: robot-pool
casare.dev/pool: {{ .Values.robotPool.name }}
{{- end -}}

{{- define "casare.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "casare.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "casare.serverImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "casare.agentImage" -}}
{{- printf "%s:%s" .Values.robotPool.image.repository (default .Chart.AppVersion .Values.robotPool.image.tag) -}}
{{- end -}}

{{/* The host:port robots dial: the advertised address or the tunnel Service's cluster name. */}}
{{- define "casare.tunnelAddress" -}}
{{- if .Values.tunnel.advertise -}}
{{- .Values.tunnel.advertise -}}
{{- else -}}
{{- printf "%s-tunnel.%s.svc.cluster.local:%v" (include "casare.fullname" .) .Release.Namespace .Values.tunnel.port -}}
{{- end -}}
{{- end -}}

{{/* The in-cluster tunnel address the pool's robots dial, whatever is advertised outside. */}}
{{- define "casare.tunnelClusterAddress" -}}
{{- printf "%s-tunnel.%s.svc.cluster.local:%v" (include "casare.fullname" .) .Release.Namespace .Values.tunnel.port -}}
{{- end -}}

{{/* Secret and key of each secret value: the existing Secret named in values, or the chart's. */}}
{{- define "casare.secretName" -}}
{{- $root := index . 0 -}}{{- $v := index . 1 -}}{{- $own := index . 2 -}}
{{- if $v.existingSecret -}}{{- $v.existingSecret -}}{{- else -}}{{- printf "%s-%s" (include "casare.fullname" $root) $own -}}{{- end -}}
{{- end -}}

{{- define "casare.secretKey" -}}
{{- $v := index . 0 -}}{{- $own := index . 1 -}}
{{- if $v.existingSecret -}}{{- $v.existingSecretKey -}}{{- else -}}{{- $own -}}{{- end -}}
{{- end -}}

{{- define "casare.caSecretName" -}}
{{- default (printf "%s-ca" (include "casare.fullname" .)) .Values.ca.existingSecret -}}
{{- end -}}

{{/* The security context of every container: non-root, read-only, nothing extra. */}}
{{- define "casare.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "casare.checkValues" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "database: set database.url (postgres://…) or database.existingSecret; the replicas share one PostgreSQL" -}}
{{- end -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
{{- fail "redis: set redis.url (redis://…) or redis.existingSecret; the replicas share one Redis" -}}
{{- end -}}
{{- if and (not .Values.ca.existingSecret) (or .Values.ca.cert .Values.ca.key) (not (and .Values.ca.cert .Values.ca.key)) -}}
{{- fail "ca: give both ca.cert and ca.key, or neither" -}}
{{- end -}}
{{- end -}}

{{/* Seconds in a duration like 90s, 5m or 1h (what the schema allows for drainTimeout). */}}
{{- define "casare.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "h" $d -}}{{- mul (trimSuffix "h" $d | atoi) 3600 -}}
{{- else if hasSuffix "m" $d -}}{{- mul (trimSuffix "m" $d | atoi) 60 -}}
{{- else -}}{{- trimSuffix "s" $d | atoi -}}
{{- end -}}
{{- end -}}

{{/* The number the pool scales on: the query given, or the jobs its robots could run, pending and running, per robot's slots (maxJobs). Each replica reports the whole fleet: max, not sum. */}}
{{- define "casare.poolQuery" -}}
{{- if .Values.robotPool.autoscaling.query -}}
{{- .Values.robotPool.autoscaling.query -}}
{{- else -}}
{{- $match := printf "{environment=%q,pool=%q}" .Values.environment .Values.robotPool.name -}}
{{- printf "ceil(max(casare_pool_pending_jobs%s) / %d) + ceil(max(casare_pool_running_jobs%s) / %d)" $match (int .Values.robotPool.autoscaling.jobsPerRobot) $match (int .Values.robotPool.maxJobs) -}}
{{- end -}}
{{- end -}}

{{/* The server's --robot-pool for the pool: what each of its robots has, the labels and capabilities its agents are started with and those they find in the image, so that casare_pool_pending_jobs counts the jobs they could run. */}}
{{- define "casare.robotPoolFlag" -}}
{{- $pool := .Values.robotPool -}}
{{- $caps := concat $pool.capabilities $pool.detectedCapabilities -}}
{{- if $pool.allowShell }}{{ $caps = append $caps "shell" }}{{ end -}}
{{- $caps = $caps | uniq | sortAlpha -}}
{{- $labels := merge (dict "pool" $pool.name) $pool.labels -}}
{{- $labelList := list -}}
{{- range $k, $v := $labels }}{{ $labelList = append $labelList (printf "%s=%s" $k $v) }}{{ end -}}
{{- $parts := list -}}
{{- if $caps }}{{ $parts = append $parts (printf "capabilities=%s" (join "+" $caps)) }}{{ end -}}
{{- $parts = append $parts (printf "labels=%s" (join "+" $labelList)) -}}
{{- printf "--robot-pool=%s=%s" $pool.name (join ";" $parts) -}}
{{- end -}}
