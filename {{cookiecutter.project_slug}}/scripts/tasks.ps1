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
    If Windows refuses to run scripts, use: powershell -ExecutionPolicy Bypass -File scripts\tasks.ps1 test
#>
# A simple script (no [Parameter()] attributes), so $args keeps everything after the task,
# including pytest flags such as -q or -k.
param(
    [ValidateSet('help', 'setup', 'train', 'smoke', 'test', 'lint', 'format', 'clean')]
    [string] $Task = 'help'
)
$Rest = @($args)

$ErrorActionPreference = 'Stop'
$Package = '{{ cookiecutter.package_name }}'
Set-Location (Split-Path -Parent $PSScriptRoot)

function Invoke-Python([string[]] $Arguments) {
    & {{ cookiecutter.__run }}python @Arguments
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

switch ($Task) {
    'setup' { & (Join-Path $PSScriptRoot 'setup.ps1') @args; exit $LASTEXITCODE }
    'train' { Invoke-Python (@('-m', "$Package.train") + $Rest) }
    'smoke' {
        $env:WANDB_MODE = 'offline'
        Invoke-Python (@('-m', "$Package.train", 'debug=fast', 'trainer.device=cpu', 'hydra.run.dir=outputs/smoke') + $Rest)
    }
    'test' { Invoke-Python (@('-m', 'pytest') + $Rest) }
    'lint' { Invoke-Python @('-m', 'ruff', 'check', '.') }
    'format' {
        Invoke-Python @('-m', 'ruff', 'format', '.')
        Invoke-Python @('-m', 'ruff', 'check', '--fix', '.')
    }
    'clean' {
        foreach ($path in @('outputs', 'multirun', '.pytest_cache', '.ruff_cache')) {
            if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force }
        }
    }
    default { Get-Help $PSCommandPath -Detailed }
}
