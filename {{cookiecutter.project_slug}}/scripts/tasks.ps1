<#
.SYNOPSIS
    The Makefile's tasks for Windows PowerShell 5.1 and PowerShell 7.

.DESCRIPTION
    Run from the project folder with the environment active (conda activate / .venv):
        .\scripts\tasks.ps1 setup        # = make setup   (scripts\setup.ps1; extra arguments pass through)
        .\scripts\tasks.ps1 train        # = make train   (extra arguments are Hydra overrides)
        .\scripts\tasks.ps1 smoke        # = make smoke   (one short epoch on the CPU, offline)
        .\scripts\tasks.ps1 test         # = make test   (extra arguments go to pytest, e.g. -q -k train)
        .\scripts\tasks.ps1 lint         # = make lint
        .\scripts\tasks.ps1 format       # = make format
        .\scripts\tasks.ps1 clean        # = make clean
    Sweeps need no quotes: `.\scripts\tasks.ps1 train -m optimizer=adam,sgd` reaches Hydra as
    optimizer=adam,sgd (PowerShell splits it into an array; this script joins it back with commas, and
    takes numbers as typed: lr=0.5,1.0 stays lr=0.5,1.0). Flags such as `setup -Cpu -WhatIf` pass through.
    Your session keeps its folder and environment variables; the exit code is the task's.
    If Windows refuses to run scripts, use: powershell -ExecutionPolicy Bypass -File scripts\tasks.ps1 test
#>
# A simple script (no [Parameter()] attributes), so $args keeps everything after the task,
# including pytest flags such as -q or -k.
param(
    [ValidateSet('help', 'setup', 'train', 'smoke', 'test', 'lint', 'format', 'clean')]
    [string] $Task = 'help'
)
$ErrorActionPreference = 'Stop'
$Package = '{{ cookiecutter.package_name }}'

# The arguments as received: splatted as @Received, `-Cpu` or `-WhatIf` stay parameter names for setup.ps1
# (a [string] copy would turn them into values).
$Received = $args
# The command line as typed (empty under -File, where each argument arrives as the string typed).
$Typed = $MyInvocation.Line

function ConvertTo-Argument($Value) {
    # An unquoted a=b,c arrives as the array ('a=b', 'c'): give Hydra its comma-separated sweep back. Numbers
    # in it were already parsed (lr=0.5,1.0 gives 1, run=001,002 gives 2): take that word as typed instead.
    if ($Value -isnot [array]) { return [string] $Value }
    $first = [string] $Value[0]
    if ($Typed) {
        $found = [regex]::Matches($Typed, '(?<=^|\s)' + [regex]::Escape($first) + ',[^\s;|]+')
        if ($found.Count -eq 1) { return $found[0].Value }
    }
    return (@($Value | ForEach-Object { ConvertTo-Argument $_ }) -join ',')
}

function ConvertTo-NativeArgument([string] $Value) {
    # Windows PowerShell 5.1 (and 7.x's Legacy mode) passes a " inside an argument unescaped, so Python
    # loses it (+tags=["a","b"] arrives as +tags=[a,b]); escape it the way Python's command line reads it.
    $legacy = $PSVersionTable.PSVersion -lt [version] '7.3' -or
        ((Test-Path -LiteralPath variable:PSNativeCommandArgumentPassing) -and "$PSNativeCommandArgumentPassing" -eq 'Legacy')
    if ($legacy -and $Value.Contains('"')) { return ($Value -replace '(\\*)"', '$1$1\"') }
    return $Value
}

$Rest = @($args | ForEach-Object { ConvertTo-NativeArgument (ConvertTo-Argument $_) })

function Invoke-Python([string[]] $Arguments) {
    # Output is not captured, so logs and progress bars stream as usual; the exit code is kept.
    # Continue: Windows PowerShell 5.1 may turn Hydra's log lines on stderr into errors.
    $ErrorActionPreference = 'Continue'
    & {{ cookiecutter.__run }}python @Arguments
    $script:ExitCode = $LASTEXITCODE
}

function Invoke-Task {
    switch ($Task) {
        'train' { Invoke-Python (@('-m', "$Package.train") + $Rest) }
        'smoke' {
            $saved = $env:WANDB_MODE
            $env:WANDB_MODE = 'offline'
            try {
                Invoke-Python (@('-m', "$Package.train", 'debug=fast', 'trainer.device=cpu',
                        'hydra.run.dir=outputs/smoke') + $Rest)
            } finally {
                $env:WANDB_MODE = $saved  # $null removes the variable again
            }
        }
        'test' { Invoke-Python (@('-m', 'pytest') + $Rest) }
        'lint' {
            Invoke-Python @('-m', 'ruff', 'check', '.')
            if ($script:ExitCode -eq 0) { Invoke-Python @('-m', 'mypy') }
        }
        'format' {
            Invoke-Python @('-m', 'ruff', 'format', '.')
            if ($script:ExitCode -eq 0) { Invoke-Python @('-m', 'ruff', 'check', '--fix', '.') }
        }
        'clean' {
            foreach ($path in @('outputs', 'multirun', '.pytest_cache', '.ruff_cache', '.mypy_cache')) {
                if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force }
            }
        }
        default { Get-Help -Name $PSCommandPath -Detailed }
    }
}

if ($Task -eq 'setup') {
    # From the caller's folder: relative paths such as -ProfilePath .\hook.ps1 mean what the user sees.
    & (Join-Path $PSScriptRoot 'setup.ps1') @Received
    $ExitCode = $LASTEXITCODE
} else {
    Push-Location -LiteralPath (Split-Path -Parent $PSScriptRoot)
    try {
        Invoke-Task
    } catch {
        Write-Host "tasks.ps1 ${Task}: $($_.Exception.Message)" -ForegroundColor Red
        $ExitCode = 1
    } finally {
        Pop-Location
    }
}
exit $ExitCode
