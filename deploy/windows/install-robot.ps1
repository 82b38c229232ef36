<#
.SYNOPSIS
Installs a CasareRPA robot on this Windows machine as a service.

.DESCRIPTION
Copies casare-agent.exe into -InstallDir, enrols the robot with a one-time
token from `casarectl robots token create`, locks the robot's directory
(it holds the robot's private key) to SYSTEM and Administrators, installs
the `casare-agent` Windows service (automatic start, restart after
failures, logs in the Application event log) and starts it.

Run it from an elevated PowerShell. Run it again with another -ServiceName
and -DataDir to put a second robot on the same machine.

.EXAMPLE
.\install-robot.ps1 -Token "cet_..." -ControlPlaneUrl "casare.example.com:8443" -Labels "site=berlin","os=windows"
#>
[CmdletBinding()]
param(
    # One-time enrollment token (casarectl robots token create NAME).
    [Parameter(Mandatory = $true)][string]$Token,
    # The control plane's robot address, host:port (UDP). Default: the one
    # the token names.
    [string]$ControlPlaneUrl = "",
    # Where casare-agent.exe is installed.
    [string]$InstallDir = "C:\Program Files\CasareRPA",
    # The robot's directory: certificate, key, identity.
    [string]$DataDir = "C:\ProgramData\CasareRPA\robot",
    # The casare-agent.exe to install. Default: the one next to this script.
    [string]$AgentExe = (Join-Path $PSScriptRoot "casare-agent.exe"),
    [string]$ServiceName = "casare-agent",
    # Labels k=v that jobs' requirements match.
    [string[]]$Labels = @(),
    # Capabilities to advertise besides those found (browser, …).
    [string[]]$Capabilities = @(),
    [int]$MaxJobs = 1,
    # Let shell.run steps run commands on this machine.
    [switch]$AllowShell
)

$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw "install-robot.ps1 installs a service: run it from an elevated PowerShell (Run as Administrator)."
}
if (-not (Test-Path -LiteralPath $AgentExe -PathType Leaf)) {
    throw "casare-agent.exe not found at $AgentExe; build it with 'GOOS=windows go build ./cmd/casare-agent' or pass -AgentExe."
}
if ($MaxJobs -lt 1) { throw "-MaxJobs: at least 1, got $MaxJobs" }
foreach ($l in $Labels) {
    if ($l -notmatch '^[^=]+=.*$') { throw "-Labels: want key=value, got '$l'" }
}
if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    throw "service $ServiceName is already installed; remove it first with: casare-agent service uninstall --name $ServiceName"
}

# Binary.
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
$exe = Join-Path $InstallDir "casare-agent.exe"
if ((Resolve-Path -LiteralPath $AgentExe).Path -ne $exe) {
    Copy-Item -LiteralPath $AgentExe -Destination $exe -Force
}

# The robot's directory holds its private key: SYSTEM (the service) and
# Administrators only, nothing inherited.
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
& icacls.exe $DataDir /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { throw "icacls could not restrict $DataDir (exit $LASTEXITCODE)" }

# Enrolment.
$enroll = @("enroll", "--token", $Token, "--dir", $DataDir)
if ($ControlPlaneUrl -ne "") {
    $enroll += @("--server", ($ControlPlaneUrl -replace '^[a-z]+://', ''))
}
& $exe @enroll
if ($LASTEXITCODE -ne 0) { throw "enrolment failed (exit $LASTEXITCODE); the token is used once and expires: create a new one if it was spent" }

# Service.
$run = @("--dir", $DataDir, "--max-jobs", "$MaxJobs")
if ($Labels.Count -gt 0) { $run += @("--labels", ($Labels -join ",")) }
if ($Capabilities.Count -gt 0) { $run += @("--capabilities", ($Capabilities -join ",")) }
if ($ControlPlaneUrl -ne "") { $run += @("--server", ($ControlPlaneUrl -replace '^[a-z]+://', '')) }
if ($AllowShell) { $run += "--allow-shell" }
& $exe service install --name $ServiceName -- @run
if ($LASTEXITCODE -ne 0) { throw "service install failed (exit $LASTEXITCODE)" }
& $exe service start --name $ServiceName
if ($LASTEXITCODE -ne 0) { throw "service start failed (exit $LASTEXITCODE)" }
& $exe service status --name $ServiceName
Write-Host "Robot installed. Its log is in the Application event log, source $ServiceName."
