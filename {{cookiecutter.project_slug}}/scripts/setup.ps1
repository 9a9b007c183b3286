<#
.SYNOPSIS
    Set up {{ cookiecutter.project_name }} on Windows in one command (Windows PowerShell 5.1 or PowerShell 7).

.DESCRIPTION
    1. Finds conda: -CondaPath (which must exist), $env:CONDA_EXE, then the usual install folders
       (%USERPROFILE%\miniconda3, anaconda3, miniforge3, %LOCALAPPDATA%, %ProgramData%).
    2. Makes `conda activate` work in PowerShell: scripts\conda_profile.py, run with conda's own
       python.exe, adds the conda hook to profile.ps1 (CurrentUserAllHosts: every window, VS Code
       included) in Documents\WindowsPowerShell and, if PowerShell 7 is installed, Documents\PowerShell,
       unless a profile there already runs one (a `conda init` block counts). With -ProfilePath the
       hook goes into that file and profile.ps1 gets one line that loads it. A rerun changes nothing;
       -UndoProfile takes the lines out again.
    3. Says in one line if the execution policy of a new window, or blocked (downloaded) files, would
       stop the profile or these scripts, and how to fix it.
    4. Creates or updates the environment from environment.yml (conda) or .venv (pip; uv: uv sync,
       which writes uv.lock on the first run), installs this project with its dev tools, and checks
       that it imports. With uv, -Cpu routes torch to the pytorch-cpu index in pyproject.toml.
    5. Reports the PyTorch build and whether a CUDA GPU is usable.

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
    # A profile file to hold the conda hook; profile.ps1 gets a line that loads it.
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
    [switch] $ProfileOnly,
    # Take the conda hook lines this script added out of the profiles, and stop.
    [switch] $UndoProfile
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$Package = '{{ cookiecutter.package_name }}'
$PythonVersion = '{{ cookiecutter.python_version }}'
$CpuIndex = 'https://download.pytorch.org/whl/cpu'
$ProjectRoot = Split-Path -Parent $PSScriptRoot
$ProfileHelper = Join-Path $PSScriptRoot 'conda_profile.py'
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
    if ($CondaPath) {
        # An explicit -CondaPath is used or refused, never silently replaced by another install.
        foreach ($candidate in @($CondaPath, [IO.Path]::Combine($CondaPath, 'Scripts', 'conda.exe'))) {
            if (Test-Path -LiteralPath $candidate -PathType Leaf) {
                return (Resolve-Path -LiteralPath $candidate).ProviderPath
            }
        }
        throw "-CondaPath '$CondaPath' has no conda.exe (nor Scripts\conda.exe); pass the folder conda is installed in, e.g. $env:USERPROFILE\miniconda3."
    }
    $candidates = @()
    if ($env:CONDA_EXE) { $candidates += $env:CONDA_EXE }
    $roots = @($env:USERPROFILE, $env:LOCALAPPDATA, $env:ProgramData) | Where-Object { $_ }
    foreach ($root in $roots) {
        foreach ($name in @('miniconda3', 'anaconda3', 'miniforge3', 'Miniconda3', 'Anaconda3')) {
            $candidates += [IO.Path]::Combine($root, $name, 'Scripts', 'conda.exe')
        }
    }
    $onPath = Get-Command conda.exe -CommandType Application -ErrorAction SilentlyContinue
    if ($onPath) { $candidates += $onPath[0].Path }
    foreach ($candidate in $candidates) {
        if ($candidate -and (Test-Path -LiteralPath $candidate -PathType Leaf)) {
            return (Resolve-Path -LiteralPath $candidate).ProviderPath
        }
    }
    return $null
}

function Get-PythonVersion([string[]] $Command) {
    # The X.Y of a Python command (exe plus arguments), or $null if it does not run (e.g. the Store's stub).
    $ErrorActionPreference = 'Continue'
    $arguments = @($Command | Select-Object -Skip 1) + @('-c', "import sys; print('%d.%d' % sys.version_info[:2])")
    $out = & $Command[0] @arguments 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $out) { return $null }
    $line = "$(@($out)[-1])".Trim()
    if ($line -notmatch '^[0-9]+\.[0-9]+$') { return $null }
    return [version] $line
}

function Find-Python {
    # py -<version>, then py -3 (the newest), then python on PATH: the first that meets requires-python.
    $pyproject = Get-Content -LiteralPath (Join-Path $ProjectRoot 'pyproject.toml') -Raw -Encoding UTF8
    $minimum = [version] $PythonVersion
    if ($pyproject -match 'requires-python\s*=\s*"\s*>=\s*([0-9]+(\.[0-9]+)+)') { $minimum = [version] $Matches[1] }
    $candidates = @()
    $launcher = Get-Command py.exe -CommandType Application -ErrorAction SilentlyContinue
    if ($launcher) {
        $candidates += , @($launcher[0].Path, "-$PythonVersion")
        $candidates += , @($launcher[0].Path, '-3')
    }
    $python = Get-Command python.exe -CommandType Application -ErrorAction SilentlyContinue
    if ($python) { $candidates += , @($python[0].Path) }
    foreach ($candidate in $candidates) {
        $version = Get-PythonVersion $candidate
        if ($version -and $version -ge $minimum) { return , $candidate }
        if ($version) { Write-Step "skipping $($candidate -join ' '): Python $version, the project needs >= $minimum" }
    }
    throw "no Python >= $minimum found (tried py -$PythonVersion, py -3, python); install one from python.org and rerun."
}

function Get-HelperPython([string] $Conda) {
    # conda's own python.exe (every conda install has one in its root), else any suitable Python.
    if ($Conda) {
        $root = [IO.Path]::GetDirectoryName([IO.Path]::GetDirectoryName($Conda))
        $python = [IO.Path]::Combine($root, 'python.exe')
        if (Test-Path -LiteralPath $python -PathType Leaf) { return , @($python) }
    }
    return Find-Python
}

function Invoke-Helper([string[]] $Python, [string[]] $Arguments, [switch] $Capture) {
    # Runs scripts\conda_profile.py. Uncaptured, it writes to the console itself (Korean paths print
    # right); -Capture returns its lines (ASCII only: the policy verdicts).
    $ErrorActionPreference = 'Continue'
    $all = @($Python | Select-Object -Skip 1) + @($ProfileHelper) + $Arguments
    if ($Capture) {
        $out = @(& $Python[0] @all)
    } else {
        & $Python[0] @all
        $out = @()
    }
    if ($LASTEXITCODE -ne 0) { throw "conda_profile.py $($Arguments[0]) failed (exit code $LASTEXITCODE); see above." }
    return $out
}

function Get-Editions {
    # The PowerShell editions installed: this one, Windows PowerShell 5.1 (always on Windows), PowerShell 7.
    $editions = @($PSVersionTable.PSEdition)
    if (Get-Command powershell.exe -CommandType Application -ErrorAction SilentlyContinue) { $editions += 'Desktop' }
    if (Get-Command pwsh.exe -CommandType Application -ErrorAction SilentlyContinue) { $editions += 'Core' }
    return @($editions | Select-Object -Unique)
}

function Get-ProfileArguments([string[]] $Editions) {
    # Where the profiles are: the real Documents folder (OneDrive may have moved it), per edition.
    $documents = [Environment]::GetFolderPath('MyDocuments')
    if (-not $documents) { throw 'Windows reports no Documents folder, so PowerShell has no profile folder; use -SkipProfile.' }
    $arguments = @('--documents', $documents)
    foreach ($edition in $Editions) { $arguments += @('--edition', $edition.ToLower()) }
    if ($ProfilePath) {
        $arguments += @('--profile-path', $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($ProfilePath))
    }
    if ($Dry) { $arguments += '--dry-run' }
    return $arguments
}

function Get-PolicyList([string] $Edition) {
    # `Get-ExecutionPolicy -List` of an edition as Scope=Policy pairs (the other edition in a child process).
    if ($Edition -eq $PSVersionTable.PSEdition) {
        return @(Get-ExecutionPolicy -List | ForEach-Object { $_.Scope.ToString() + '=' + $_.ExecutionPolicy.ToString() })
    }
    $exe = @{ Desktop = 'powershell.exe'; Core = 'pwsh.exe' }[$Edition]
    $ErrorActionPreference = 'Continue'
    $pairs = & $exe -NoLogo -NoProfile -NonInteractive -Command "Get-ExecutionPolicy -List | ForEach-Object { `$_.Scope.ToString() + '=' + `$_.ExecutionPolicy.ToString() }" 2>$null
    if ($LASTEXITCODE -ne 0) { return @() }
    return @($pairs)
}

function Test-ExecutionPolicy([string[]] $Python, [string[]] $Editions) {
    # Judge what a new window will do (the Process scope, e.g. -ExecutionPolicy Bypass, does not carry over).
    $version = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' -ErrorAction SilentlyContinue
    $server = [bool] ($version -and ($version.PSObject.Properties.Name -contains 'InstallationType') -and
        $version.InstallationType -like 'Server*')
    $blocked = [bool] (Get-Item -LiteralPath $PSCommandPath -Stream Zone.Identifier -ErrorAction SilentlyContinue)
    foreach ($edition in $Editions) {
        $arguments = @('policy', '--edition', $edition.ToLower())
        if ($server) { $arguments += '--server' }
        if ($blocked) { $arguments += '--blocked' }
        $scopes = @(Get-PolicyList $edition)
        if ($scopes.Count -eq 0) { continue }  # that edition did not answer: no verdict rather than a guess
        foreach ($line in (Invoke-Helper $Python ($arguments + $scopes) -Capture)) {
            if ($line) { Write-Warning $line }
        }
    }
}

function Set-CondaHook([string] $Conda) {
    $python = Get-HelperPython $Conda
    $editions = Get-Editions
    $arguments = Get-ProfileArguments $editions
    if ($UndoProfile) {
        Invoke-Helper $python (@('remove') + $arguments)
        return
    }
    Invoke-Helper $python (@('add', '--conda', $Conda) + $arguments)
    Test-ExecutionPolicy $python $editions
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
        [string[]] $base = Find-Python
        Invoke-Step "create $venv with $($base -join ' ')" {
            Invoke-Native $base[0] (@($base | Select-Object -Skip 1) + @('-m', 'venv', $venv))
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

function Invoke-Setup {
    if ($Dry) { Write-Host 'Dry run: nothing will be changed.' }
    $conda = $null
    if ($EnvManager -eq 'conda' -or -not $SkipProfile -or $CondaPath) {
        $conda = Find-Conda
    }
    if ($EnvManager -eq 'conda' -and -not $conda) {
        throw 'conda not found: install Miniconda or Miniforge, pass -CondaPath <folder>, or use -EnvManager pip.'
    }
    if ($conda) { Write-Step "conda: $conda" }
    if ($UndoProfile -or (-not $SkipProfile -and $conda)) { Set-CondaHook $conda }
    if ($ProfileOnly -or $UndoProfile) { return }

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
}

$exitCode = 0
Push-Location -LiteralPath $ProjectRoot
try {
    Invoke-Setup
} catch {
    Write-Host "setup.ps1: $($_.Exception.Message)" -ForegroundColor Red
    $exitCode = 1
} finally {
    Pop-Location
}
exit $exitCode
