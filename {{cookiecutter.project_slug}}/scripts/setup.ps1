<#
.SYNOPSIS
    Set up {{ cookiecutter.project_name }} on Windows in one command (Windows PowerShell 5.1 or PowerShell 7).

.DESCRIPTION
    1. Finds conda: -CondaPath, $env:CONDA_EXE, then the usual install folders
       (%USERPROFILE%\miniconda3, anaconda3, miniforge3, %LOCALAPPDATA%, %ProgramData%).
    2. Makes `conda activate` work in PowerShell: adds the conda hook line
           & "<conda.exe>" shell.powershell hook | Out-String | Invoke-Expression
       to your profile, once (a rerun adds nothing). With -ProfilePath the hook goes into
       that file instead, and your standard profile gets one line that loads it, because
       PowerShell only ever reads $PROFILE from the Documents folder.
    3. Creates or updates the environment from environment.yml (conda) or .venv (pip; uv: uv sync,
       which writes uv.lock on the first run), installs this project with its dev tools, and checks
       that it imports. With uv, -Cpu routes torch to the pytorch-cpu index in pyproject.toml.
    4. Reports the PyTorch build and whether a CUDA GPU is usable.

    If Windows refuses to run this script ("running scripts is disabled on this system"),
    run it as:  powershell -ExecutionPolicy Bypass -File scripts\setup.ps1

.EXAMPLE
    .\scripts\setup.ps1
.EXAMPLE
    .\scripts\setup.ps1 -ProfilePath D:\MyPowerShellProfiles\Microsoft.PowerShell_profile.ps1
.EXAMPLE
    .\scripts\setup.ps1 -WhatIf      # only print what would be done
.EXAMPLE
    .\scripts\setup.ps1 -Cpu -EnvManager pip
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    # conda (environment.yml), pip (a .venv in the project folder) or uv (uv sync: .venv and uv.lock).
    [ValidateSet('conda', 'pip', 'uv')]
    [string] $EnvManager = '{{ cookiecutter.env_manager }}',
    # conda.exe, or the folder conda is installed in (e.g. C:\Users\me\miniconda3).
    [string] $CondaPath = '',
    # A profile file to hold the conda hook instead of the standard $PROFILE.
    [string] $ProfilePath = '',
    # The conda environment's name.
    [string] $EnvName = '{{ cookiecutter.project_slug }}',
    # Install a CPU-only PyTorch.
    [switch] $Cpu,
    # Same as -WhatIf: print every step, change nothing.
    [switch] $DryRun,
    # Leave the PowerShell profile alone.
    [switch] $SkipProfile,
    # Only fix the PowerShell profile; do not build the environment.
    [switch] $ProfileOnly
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$Package = '{{ cookiecutter.package_name }}'
$PythonVersion = '{{ cookiecutter.python_version }}'
$CpuIndex = 'https://download.pytorch.org/whl/cpu'
$ProjectRoot = Split-Path -Parent $PSScriptRoot
$Dry = $DryRun.IsPresent -or $WhatIfPreference

function Write-Step([string] $Message) {
    Write-Host "==> $Message"
}

function Invoke-Step([string] $Description, [scriptblock] $Action) {
    if ($Dry) {
        Write-Host "[dry run] would $Description"
        return
    }
    Write-Step $Description
    & $Action
}

function Invoke-Native([string] $Exe, [string[]] $Arguments) {
    # Warnings on stderr must not stop the script (Windows PowerShell 5.1 turns them into errors);
    # the exit code decides. Out-Host: output goes to the screen, not into a function's return value.
    $ErrorActionPreference = 'Continue'
    & $Exe @Arguments | Out-Host
    if ($LASTEXITCODE -ne 0) {
        throw "'$Exe $($Arguments -join ' ')' failed with exit code $LASTEXITCODE."
    }
}

function Find-Conda {
    $candidates = @()
    if ($CondaPath) {
        $candidates += $CondaPath
        $candidates += Join-Path $CondaPath 'Scripts\conda.exe'
    }
    if ($env:CONDA_EXE) { $candidates += $env:CONDA_EXE }
    $roots = @($env:USERPROFILE, $env:LOCALAPPDATA, $env:ProgramData) | Where-Object { $_ }
    foreach ($root in $roots) {
        foreach ($name in @('miniconda3', 'anaconda3', 'miniforge3', 'Miniconda3', 'Anaconda3')) {
            $candidates += Join-Path (Join-Path $root $name) 'Scripts\conda.exe'
        }
    }
    $onPath = Get-Command conda.exe -CommandType Application -ErrorAction SilentlyContinue
    if ($onPath) { $candidates += $onPath[0].Path }
    foreach ($candidate in $candidates) {
        if ($candidate -and (Test-Path -LiteralPath $candidate -PathType Leaf)) {
            return (Resolve-Path -LiteralPath $candidate).Path
        }
    }
    return $null
}

function Test-CondaHook([string] $Path) {
    if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) { return $false }
    $text = Get-Content -LiteralPath $Path -Raw
    return ($text -match 'shell\.powershell"?\s+"?hook')
}

function Add-LineOnce([string] $Path, [string] $Line, [string] $What) {
    if ((Test-Path -LiteralPath $Path -PathType Leaf) -and
        ((Get-Content -LiteralPath $Path) -contains $Line)) {
        Write-Step "$What is already in $Path"
        return
    }
    Invoke-Step "add $What to $Path" {
        $folder = Split-Path -Parent $Path
        if ($folder -and -not (Test-Path -LiteralPath $folder)) {
            New-Item -ItemType Directory -Path $folder -Force | Out-Null
        }
        Add-Content -LiteralPath $Path -Value $Line -Encoding UTF8
    }
}

function Set-CondaHook([string] $Conda) {
    $standard = $PROFILE.CurrentUserCurrentHost
    $target = $standard
    if ($ProfilePath) { $target = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($ProfilePath) }
    $hook = '& "{0}" shell.powershell hook | Out-String | Invoke-Expression' -f $Conda
    if (Test-CondaHook $target) {
        Write-Step "conda hook already in $target"
    } else {
        Add-LineOnce $target $hook 'the conda hook'
    }
    if ($target -ne $standard) {
        Add-LineOnce $standard (". '{0}'" -f $target) "a line loading $target"
    }
    $policy = Get-ExecutionPolicy
    if (@('Restricted', 'AllSigned') -contains "$policy") {
        Write-Warning ("Execution policy '$policy' stops PowerShell from loading your profile; " +
            'run once: Set-ExecutionPolicy -Scope CurrentUser RemoteSigned')
    }
}

function Get-EnvPrefix([string] $Conda) {
    $json = & $Conda env list --json | Out-String
    foreach ($prefix in @((ConvertFrom-Json $json).envs)) {
        if ((Split-Path -Leaf $prefix) -eq $EnvName) { return $prefix }
    }
    return $null
}

function Build-CondaEnv([string] $Conda) {
    $file = Join-Path $ProjectRoot 'environment.yml'
    if (Get-EnvPrefix $Conda) {
        Invoke-Step "update conda env '$EnvName' from environment.yml" {
            Invoke-Native $Conda @('env', 'update', '--name', $EnvName, '--file', $file, '--prune')
        }
    } else {
        Invoke-Step "create conda env '$EnvName' (python $PythonVersion) from environment.yml" {
            Invoke-Native $Conda @('env', 'create', '--name', $EnvName, '--file', $file)
        }
    }
    if ($Cpu) {
        Invoke-Step 'switch to a CPU-only PyTorch build' {
            Invoke-Native $Conda @('install', '--yes', '--name', $EnvName, '--channel', 'conda-forge', 'pytorch=*=cpu*')
        }
    }
    if ($Dry) { return $null }
    $prefix = Get-EnvPrefix $Conda
    if (-not $prefix) { throw "conda reports no env named '$EnvName' after creating it; run: conda env list" }
    return (Join-Path $prefix 'python.exe')
}

function Build-Venv {
    $venv = Join-Path $ProjectRoot '.venv'
    $python = Join-Path $venv 'Scripts\python.exe'
    if (Test-Path -LiteralPath $python) {
        Write-Step "reusing $venv"
    } else {
        $launcher = Get-Command py.exe -CommandType Application -ErrorAction SilentlyContinue
        Invoke-Step "create $venv (python $PythonVersion)" {
            if ($launcher) {
                Invoke-Native $launcher[0].Path @("-$PythonVersion", '-m', 'venv', $venv)
            } else {
                Invoke-Native 'python' @('-m', 'venv', $venv)
            }
        }
    }
    $torch = @()
    if ($env:TORCH_SPEC) {
        $torch = $env:TORCH_SPEC -split '\s+'
    } elseif ($Cpu) {
        $torch = @('torch', 'torchvision', '--index-url', $CpuIndex)
    } elseif (Get-Command nvidia-smi -ErrorAction SilentlyContinue) {
        # PyPI's Windows wheels are CPU-only; the CUDA ones live on PyTorch's index.
        $torch = @('torch', 'torchvision', '--index-url', 'https://download.pytorch.org/whl/cu126')
    }
    Invoke-Step 'upgrade pip' { Invoke-Native $python @('-m', 'pip', 'install', '--quiet', '--upgrade', 'pip') }
    if ($torch.Count -gt 0) {
        Invoke-Step "install PyTorch: $($torch -join ' ')" {
            Invoke-Native $python (@('-m', 'pip', 'install', '--quiet') + $torch)
        }
    }
    Invoke-Step 'install the project with its dev tools (pip install -e .[dev])' {
        Invoke-Native $python @('-m', 'pip', 'install', '--quiet', '-e', ('{0}[dev]' -f $ProjectRoot))
    }
    if ($Dry) { return $null }
    return $python
}

function Find-Uv {
    $candidates = @()
    if ($env:UV) { $candidates += $env:UV }
    $onPath = Get-Command uv -CommandType Application -ErrorAction SilentlyContinue
    if ($onPath) { $candidates += $onPath[0].Path }
    if ($env:USERPROFILE) {
        $candidates += Join-Path $env:USERPROFILE '.local\bin\uv.exe'
        $candidates += Join-Path $env:USERPROFILE '.cargo\bin\uv.exe'
    }
    foreach ($candidate in $candidates) {
        if ($candidate -and (Test-Path -LiteralPath $candidate -PathType Leaf)) { return $candidate }
    }
    return $null
}

function Set-CpuSource {
    # Uncomment the pytorch-cpu lines of [tool.uv.sources]; uv sync then relocks with the CPU build.
    $file = Join-Path $ProjectRoot 'pyproject.toml'
    $text = [IO.File]::ReadAllText($file)
    $line = '(torch|torchvision) = \[\{ index = "pytorch-cpu" \}\]'
    if ($text -match "(?m)^# *$line") {
        Invoke-Step 'route torch to the pytorch-cpu index ([tool.uv.sources] in pyproject.toml)' {
            $switched = [regex]::Replace($text, "(?m)^# *($line)", '$1')
            [IO.File]::WriteAllText($file, $switched, (New-Object System.Text.UTF8Encoding $false))
        }
    } elseif ($text -notmatch "(?m)^$line") {
        throw '-Cpu: pyproject.toml has no pytorch-cpu lines under [tool.uv.sources]; route torch to a CPU index there yourself.'
    }
}

function Build-UvEnv {
    $uv = Find-Uv
    if (-not $uv) {
        throw 'uv not found: install it (https://docs.astral.sh/uv/getting-started/installation/, or: pip install uv), then run this again.'
    }
    Write-Step "uv: $uv"
    if ($Cpu) { Set-CpuSource }
    if (-not (Test-Path -LiteralPath (Join-Path $ProjectRoot 'uv.lock'))) {
        Write-Step 'no uv.lock yet: uv sync writes it; commit it with the code'
    }
    Invoke-Step 'uv sync: the project, its dev group and the locked versions' {
        Invoke-Native $uv @('sync')
    }
    if ($Dry) { return $null }
    return (Join-Path $ProjectRoot '.venv\Scripts\python.exe')
}

function Show-Status([string] $Python) {
    Invoke-Native $Python @('-c', "import $Package")
    $probe = 'import torch; cuda = torch.cuda.is_available(); ' +
        'name = torch.cuda.get_device_name(0) if cuda else ''none (training runs on the CPU)''; ' +
        'print(f''torch {torch.__version__}, CUDA GPU: {name}'')'
    Invoke-Native $Python @('-c', $probe)
}

try {
    Push-Location $ProjectRoot
    if ($Dry) { Write-Host 'Dry run: nothing will be changed.' }
    $conda = $null
    if ($EnvManager -eq 'conda' -or -not $SkipProfile) {
        $conda = Find-Conda
    }
    if ($EnvManager -eq 'conda' -and -not $conda) {
        throw 'conda not found: install Miniconda or Miniforge, pass -CondaPath <folder>, or use -EnvManager pip.'
    }
    if ($conda) { Write-Step "conda: $conda" }
    if (-not $SkipProfile -and $conda) { Set-CondaHook $conda }
    if ($ProfileOnly) { return }

    if ($EnvManager -eq 'conda') {
        $run = Build-CondaEnv $conda
        $activate = "conda activate $EnvName"
    } elseif ($EnvManager -eq 'uv') {
        $run = Build-UvEnv
        $activate = '.\.venv\Scripts\Activate.ps1   # or put uv run before each command'
    } else {
        $run = Build-Venv
        $activate = '.\.venv\Scripts\Activate.ps1'
    }
    if ($run) {
        Show-Status $run
    } else {
        Write-Host "[dry run] would check 'import $Package' and report the PyTorch build and GPU"
    }
    Write-Host ''
    Write-Host 'Ready. Next (open a new PowerShell window first if the profile changed):'
    Write-Host "  $activate"
    Write-Host "  python -m $Package.train debug=fast   # one quick epoch, offline"
    Write-Host '  .\scripts\tasks.ps1 test               # or: train, lint, format, smoke'
} catch {
    Write-Host "setup.ps1: $($_.Exception.Message)" -ForegroundColor Red
    exit 1
} finally {
    Pop-Location
}
