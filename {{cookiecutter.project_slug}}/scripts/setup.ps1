<#
.SYNOPSIS
    Set up {{ cookiecutter.project_slug }} on Windows in one command (Windows PowerShell 5.1 or PowerShell 7).

.DESCRIPTION
    1. Finds conda (conda mode, or -CondaPath): -CondaPath (which must exist), $env:CONDA_EXE, the usual
       install folders ($CondaRoots below: %USERPROFILE%, %LOCALAPPDATA%, %ProgramData%, and C:\ itself,
       where users with a Korean user name must install, since the installers refuse non-ASCII folders),
       the installs registered under Software\Python (PEP 514: D:\miniconda3 and the like), then PATH.
    2. conda mode: makes `conda activate` work in PowerShell: scripts\conda_profile.py, run with conda's
       own python.exe, writes the hook into conda-hook.ps1 and adds one ASCII line loading it to
       profile.ps1 (CurrentUserAllHosts: every window, VS Code included) in Documents\WindowsPowerShell
       and, if PowerShell 7 is installed, Documents\PowerShell, unless a profile there already runs one
       (a `conda init` block counts). The user's bytes are never re-encoded. With -ProfilePath the line
       goes into that file and profile.ps1 gets one line that loads it. A rerun changes nothing;
       -UndoProfile takes this PC's hook out again (conda need not exist any more); other PCs that share
       the Documents folder through OneDrive keep theirs. pip and uv modes leave the profiles alone
       unless -CondaPath is given.
    3. Says in one line if the execution policy of a new window, or blocked (downloaded) files, would
       stop the profile, .venv\Scripts\Activate.ps1 or these scripts, and how to fix it.
    4. conda mode: stops with the exact commands if Anaconda's channels wait for their terms of service
       to be accepted (scripts\setup_checks.py reads `conda tos --json`), and warns when PowerShell 7.5+
       meets a conda older than 25.1.
    5. Warns before installing when the project is inside OneDrive, or when PyTorch's files would pass
       Windows' 260-character path limit (LongPathsEnabled off).
    6. Creates or updates the environment from environment.yml (conda; its prompts reach you) or .venv
       (pip; uv: uv sync, which writes uv.lock on the first run), installs this project with its dev
       tools, and checks that it imports. With an NVIDIA GPU, scripts\torch_build.py picks the CUDA
       build from nvidia-smi's compute capability (cu128 for RTX 50-series and other GPUs it has kernels
       for, cu126 for older ones); with uv it routes torch to that index in pyproject.toml, and -Cpu to
       pytorch-cpu.
    7. Runs one operation on each GPU with the installed PyTorch, and says "Ready." only if it works.

    On a fresh Windows the execution policy refuses scripts ("running scripts is disabled on this
    system"): run setup.cmd in the project folder (or double-click it), which runs this script with
    the policy set to Bypass for that run:  powershell -ExecutionPolicy Bypass -File scripts\setup.ps1

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
$ChecksHelper = Join-Path $PSScriptRoot 'setup_checks.py'
$TorchHelper = Join-Path $PSScriptRoot 'torch_build.py'
$TorchIndex = 'https://download.pytorch.org/whl/{0}'
$Dry = $DryRun.IsPresent -or $WhatIfPreference
# Where conda is looked for after $env:CONDA_EXE, in order (%VARIABLES% expanded). Miniconda's and Anaconda's
# installers refuse folders with non-ASCII names, so a user named in Hangul installs to C:\miniconda3 & co.
$CondaRoots = @(
    '%USERPROFILE%\miniconda3', '%USERPROFILE%\anaconda3', '%USERPROFILE%\miniforge3',
    '%LOCALAPPDATA%\miniconda3', '%LOCALAPPDATA%\anaconda3', '%LOCALAPPDATA%\miniforge3',
    '%ProgramData%\miniconda3', '%ProgramData%\anaconda3', '%ProgramData%\miniforge3',
    '%SystemDrive%\miniconda3', '%SystemDrive%\anaconda3', '%SystemDrive%\miniforge3'
)
# PEP 514: installers that register their Python (Miniconda's "register as my default Python", on by default
# for a just-me install) write Software\Python\<company>\<tag>\InstallPath here, wherever they installed.
$PythonRegistryKeys = @('HKCU:\Software\Python', 'HKLM:\Software\Python', 'HKLM:\Software\WOW6432Node\Python')
$Warnings = New-Object System.Collections.Generic.List[string]

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

function Invoke-Native([string] $Exe, [string[]] $Arguments, [switch] $Interactive) {
    # Warnings on stderr must not stop the script (Windows PowerShell 5.1 turns them into errors);
    # the exit code decides. Out-Host: output goes to the screen, not into a function's return value.
    # -Interactive: not piped at all, so a prompt without a newline (conda's terms of service) shows;
    # only for calls whose output nobody captures.
    $ErrorActionPreference = 'Continue'
    if ($Interactive) {
        & $Exe @Arguments
    } else {
        & $Exe @Arguments | Out-Host
    }
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
    foreach ($root in $CondaRoots) {
        $expanded = [Environment]::ExpandEnvironmentVariables($root)
        if ($expanded -notmatch '%') { $candidates += [IO.Path]::Combine($expanded, 'Scripts', 'conda.exe') }
    }
    $candidates += @(Get-RegisteredConda)
    $onPath = Get-Command conda.exe -CommandType Application -ErrorAction SilentlyContinue
    if ($onPath) { $candidates += $onPath[0].Path }
    foreach ($candidate in $candidates) {
        if ($candidate -and (Test-Path -LiteralPath $candidate -PathType Leaf)) {
            return (Resolve-Path -LiteralPath $candidate).ProviderPath
        }
    }
    return $null
}

function Get-RegisteredConda {
    # conda.exe of every install registered under $PythonRegistryKeys (PEP 514), in registry order.
    foreach ($key in $PythonRegistryKeys) {
        foreach ($company in @(Get-ChildItem -LiteralPath $key -ErrorAction SilentlyContinue)) {
            foreach ($tag in @(Get-ChildItem -LiteralPath $company.PSPath -ErrorAction SilentlyContinue)) {
                $install = $tag.OpenSubKey('InstallPath')
                if ($install -and $install.GetValue('')) {
                    [IO.Path]::Combine([string] $install.GetValue(''), 'Scripts', 'conda.exe')
                }
            }
        }
    }
}

function Get-PythonVersion([string[]] $Command) {
    # The X.Y of a Python command (exe plus arguments), or $null if it does not run (e.g. the Store's stub).
    $ErrorActionPreference = 'Continue'
    $arguments = @($Command | Select-Object -Skip 1) + @('-I', '-c', "import sys; print('%d.%d' % sys.version_info[:2])")
    $out = & $Command[0] @arguments 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $out) { return $null }
    $line = "$(@($out)[-1])".Trim()
    if ($line -notmatch '^[0-9]+\.[0-9]+$') { return $null }
    return [version] $line
}

function Find-Python([version] $Minimum) {
    # py -<version>, then py -3 (the newest), then python on PATH: the first that meets requires-python
    # (or -Minimum: the profile helper needs only 3.8).
    $minimum = [version] $PythonVersion
    if ($Minimum) {
        $minimum = $Minimum
    } else {
        $pyproject = Get-Content -LiteralPath (Join-Path $ProjectRoot 'pyproject.toml') -Raw -Encoding UTF8
        if ($pyproject -match 'requires-python\s*=\s*"\s*>=\s*([0-9]+(\.[0-9]+)+)') { $minimum = [version] $Matches[1] }
    }
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
    # conda's own python.exe (every conda install has one in its root), else any Python 3.8+.
    if ($Conda) {
        $root = [IO.Path]::GetDirectoryName([IO.Path]::GetDirectoryName($Conda))
        $python = [IO.Path]::Combine($root, 'python.exe')
        if (Test-Path -LiteralPath $python -PathType Leaf) { return , @($python) }
    }
    return Find-Python ([version] '3.8')
}

function Invoke-Helper([string[]] $Python, [string[]] $Arguments, [switch] $Capture, [string] $Script = $ProfileHelper) {
    # Runs a helper in scripts\ (conda_profile.py unless -Script says). Uncaptured, it writes to the console
    # itself (Korean paths print right); -Capture returns its lines (ASCII only: verdicts, JSON with \u escapes).
    $ErrorActionPreference = 'Continue'
    # -I: PYTHONPATH, PYTHONHOME and the user's site-packages cannot break the helper.
    $all = @($Python | Select-Object -Skip 1) + @('-I', $Script) + $Arguments
    if ($Capture) {
        $out = @(& $Python[0] @all)
    } else {
        & $Python[0] @all
        $out = @()
    }
    if ($LASTEXITCODE -ne 0) { throw "$(Split-Path -Leaf $Script) $($Arguments[0]) failed (exit code $LASTEXITCODE); see above." }
    return $out
}

function Invoke-Check([string[]] $Python, [string[]] $Arguments) {
    # scripts\setup_checks.py's answer: one line of ASCII JSON, whatever the paths in it.
    $lines = Invoke-Helper $Python $Arguments -Capture -Script $ChecksHelper
    return (ConvertFrom-Json ($lines -join ''))
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
        $arguments += @('--profile-path', $ProfilePath)
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
    # Any of the project's scripts marked as downloaded (setup.ps1 alone may have been unblocked by hand).
    $scripts = @(Get-ChildItem -LiteralPath $PSScriptRoot -Filter '*.ps1' -File -ErrorAction SilentlyContinue)
    $blocked = [bool] ($scripts | Where-Object { Get-Item -LiteralPath $_.FullName -Stream Zone.Identifier -ErrorAction SilentlyContinue })
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
    # Adds the hook, or with -UndoProfile takes it out ($Conda may then be $null: conda is not needed).
    $python = Get-HelperPython $Conda
    $arguments = Get-ProfileArguments (Get-Editions)
    if ($UndoProfile) {
        # Only this PC's hook: other PCs that share Documents through OneDrive keep theirs.
        $mine = @()
        if ($Conda) { $mine = @('--conda', $Conda) }
        Invoke-Helper $python (@('remove') + $arguments + $mine)
    } else {
        Invoke-Helper $python (@('add', '--conda', $Conda) + $arguments)
    }
}

function Test-PolicyAdvice([string] $Conda) {
    # Advice only: whatever goes wrong here (e.g. the PSModulePath error of runner-images#13221) is a warning.
    try {
        Test-ExecutionPolicy (Get-HelperPython $Conda) (Get-Editions)
    } catch {
        Write-Warning "could not check the execution policy ($($_.Exception.Message)); if a new window says 'running scripts is disabled', run: Set-ExecutionPolicy -Scope CurrentUser RemoteSigned"
    }
}

function Test-CondaTerms([string] $Conda) {
    # A Miniconda installed silently (winget, /S) has not accepted the terms of service of Anaconda's channels:
    # conda then fails (CondaToSNonInteractiveError) or waits at a prompt. Say so first, with the commands.
    # setup_checks.py reads `conda tos --json` (the table `conda tos` draws cannot tell pending from accepted).
    if ($env:CONDA_PLUGINS_AUTO_ACCEPT_TOS) { return }
    $verdict = Invoke-Check (Get-HelperPython $Conda) @('tos', '--conda', $Conda)
    if (-not $verdict.checked) { Write-Step 'conda tos: not available (no terms-of-service plugin), nothing to accept' }
    if ($verdict.message) { throw $verdict.message }
}

function Test-CondaForPowerShell([string] $Conda) {
    # conda before 25.1 breaks `conda activate` under PowerShell 7.5+ (conda#14787, PowerShell#24942).
    $ErrorActionPreference = 'Continue'
    $line = "$(& $Conda --version 2>$null)"
    if ($line -notmatch '([0-9]+\.[0-9]+(\.[0-9]+)?)') { return }
    $condaVersion = [version] $Matches[1]
    $pwsh = @(Get-Command pwsh.exe -CommandType Application -ErrorAction SilentlyContinue)
    $versions = @()
    if ($PSVersionTable.PSEdition -eq 'Core') { $versions += [version] $PSVersionTable.PSVersion.ToString() }
    if ($pwsh.Count -gt 0 -and $pwsh[0].Version) { $versions += $pwsh[0].Version }
    $newest = $versions | Sort-Object -Descending | Select-Object -First 1
    if ($newest -and $newest -ge [version] '7.5' -and $condaVersion -lt [version] '25.1') {
        $Warnings.Add("conda $condaVersion cannot activate environments in PowerShell $newest (7.5+ needs conda 25.1 or later); update it: & '$Conda' update --name base conda")
    }
}

function Get-EnvPrefix([string] $Conda) {
    # The env named $EnvName of this conda: <root>\envs\<name> or one of its envs_dirs, never a namesake
    # of another install (conda env list also shows every install's envs it has seen); setup_checks.py reads
    # `conda env list --json` and `conda config --show envs_dirs --json`.
    return (Invoke-Check (Get-HelperPython $Conda) @('env-prefix', '--conda', $Conda, '--name', $EnvName)).prefix
}

function Test-ProjectLocation([string] $SitePackages, [string[]] $Python) {
    # Before installing: OneDrive syncing the project (WinError 5/32 halfway through the torch install), and
    # PyTorch's deepest files passing 260 characters while LongPathsEnabled is off. Warnings, not errors.
    $arguments = @('location', '--project', $ProjectRoot, '--site-packages', $SitePackages)
    foreach ($name in @('OneDrive', 'OneDriveCommercial', 'OneDriveConsumer')) {
        $folder = [Environment]::GetEnvironmentVariable($name)
        if ($folder) { $arguments += @('--onedrive', $folder) }
    }
    $fileSystem = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -ErrorAction SilentlyContinue
    $longPaths = 0
    if ($fileSystem -and ($fileSystem.PSObject.Properties.Name -contains 'LongPathsEnabled')) { $longPaths = [int] $fileSystem.LongPathsEnabled }
    $arguments += @('--long-paths', [string] $longPaths)
    try {
        if (-not $Python) { $Python = Get-HelperPython $null }
        foreach ($warning in @((Invoke-Check $Python $arguments).warnings)) {
            Write-Warning $warning
            $Warnings.Add($warning)
        }
    } catch {
        Write-Warning "could not check the project's folder ($($_.Exception.Message))"
    }
}

function Get-TorchBuild([string[]] $Python) {
    # The CUDA build for this PC's NVIDIA GPUs: torch_build.py reads nvidia-smi's compute capability (cu128 has
    # kernels for RTX 50-series, sm_120; cu126 for Maxwell to Hopper). $null without an NVIDIA GPU.
    if (-not (Get-Command nvidia-smi -CommandType Application -ErrorAction SilentlyContinue)) { return $null }
    $lines = @(Invoke-Helper $Python @('index') -Capture -Script $TorchHelper)
    foreach ($warning in @($lines | Select-Object -Skip 1)) {
        Write-Warning $warning
        $Warnings.Add($warning)
    }
    if ($lines.Count -eq 0 -or $lines[0] -eq 'none') { return $null }
    Write-Step "NVIDIA GPU: the $($lines[0]) build of PyTorch"
    return [string] $lines[0]
}

function Build-CondaEnv([string] $Conda) {
    $file = Join-Path $ProjectRoot 'environment.yml'
    $root = [IO.Path]::GetDirectoryName([IO.Path]::GetDirectoryName($Conda))
    Test-ProjectLocation ([IO.Path]::Combine($root, 'envs', $EnvName, 'Lib', 'site-packages')) (Get-HelperPython $Conda)
    if (Get-EnvPrefix $Conda) {
        Invoke-Step "update conda env '$EnvName' from environment.yml" {
            Invoke-Native $Conda @('env', 'update', '--name', $EnvName, '--file', $file, '--prune') -Interactive
        }
    } else {
        Invoke-Step "create conda env '$EnvName' (python $PythonVersion) from environment.yml" {
            Invoke-Native $Conda @('env', 'create', '--name', $EnvName, '--file', $file) -Interactive
        }
    }
    if ($Cpu) {
        Invoke-Step 'switch to a CPU-only PyTorch build' {
            Invoke-Native $Conda @('install', '--yes', '--name', $EnvName, '--channel', 'conda-forge', 'pytorch=*=cpu*') -Interactive
        }
    }
}

function Get-CondaPython([string] $Conda) {
    if ($Dry) { return $null }
    $prefix = Get-EnvPrefix $Conda
    if (-not $prefix) { throw "conda reports no env named '$EnvName' after creating it; run: conda env list" }
    return (Join-Path $prefix 'python.exe')
}

function Build-Venv {
    $venv = Join-Path $ProjectRoot '.venv'
    $python = Join-Path $venv 'Scripts\python.exe'
    Test-ProjectLocation (Join-Path $venv 'Lib\site-packages')
    if (Test-Path -LiteralPath $python) {
        Write-Step "reusing $venv"
    } else {
        [string[]] $base = Find-Python
        Invoke-Step "create $venv with $($base -join ' ')" {
            Invoke-Native $base[0] (@($base | Select-Object -Skip 1) + @('-m', 'venv', $venv))
        }
    }
    # The venv's python runs torch_build.py (in a dry run, before the venv exists: any Python 3.8+).
    $helper = if (Test-Path -LiteralPath $python) { , @($python) } else { Get-HelperPython $null }
    $torch = @()
    if ($env:TORCH_SPEC) {
        $torch = @($env:TORCH_SPEC.Trim() -split '\s+' | Where-Object { $_ })
    } elseif ($Cpu) {
        $torch = @('torch', 'torchvision', '--index-url', $CpuIndex)
    } else {
        # PyPI's Windows wheels are CPU-only; the CUDA ones live on PyTorch's index, one per CUDA version.
        $build = Get-TorchBuild $helper
        if ($build) { $torch = @('torch', 'torchvision', '--index-url', ($TorchIndex -f $build)) }
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

function Set-TorchSource([string] $Index, [switch] $IfUntouched) {
    # Uncomment the torch lines of [tool.uv.sources], routed to $Index; uv sync then relocks with that build.
    # -IfUntouched: only while they are still commented out as shipped (the user's own choice stays).
    $file = Join-Path $ProjectRoot 'pyproject.toml'
    $text = [IO.File]::ReadAllText($file)
    $line = '(torch|torchvision) = \[\{ index = "pytorch-cpu" \}\]'
    if ($text -match "(?m)^# *$line") {
        Invoke-Step "route torch to the $Index index ([tool.uv.sources] in pyproject.toml)" {
            $switched = [regex]::Replace($text, "(?m)^# *$line", ('$1 = [{ index = "' + $Index + '" }]'))
            [IO.File]::WriteAllText($file, $switched, (New-Object System.Text.UTF8Encoding $false))
        }
    } elseif (-not $IfUntouched -and $text -notmatch "(?m)^(torch|torchvision) = \[\{ index = `"$Index`" \}\]") {
        throw "pyproject.toml's [tool.uv.sources] routes torch elsewhere; route it to the $Index index there yourself."
    }
}

function Build-UvEnv {
    $uv = Find-Uv
    if (-not $uv) {
        throw 'uv not found: install it (https://docs.astral.sh/uv/getting-started/installation/, or: pip install uv), then run this again.'
    }
    Write-Step "uv: $uv"
    # The helpers need a Python before .venv exists: the system's, else one uv finds or fetches.
    $helper = @($uv, 'run', '--no-project', '--quiet', 'python')
    try { $helper = Get-HelperPython $null } catch { Write-Step 'no Python on PATH: uv runs the helpers' }
    Test-ProjectLocation (Join-Path $ProjectRoot '.venv\Lib\site-packages') $helper
    if ($Cpu) {
        Set-TorchSource 'pytorch-cpu'
    } else {
        # PyPI's Windows wheels are CPU-only: with an NVIDIA GPU, the CUDA build from PyTorch's index.
        $build = Get-TorchBuild $helper
        if ($build) { Set-TorchSource "pytorch-$build" -IfUntouched }
    }
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
    # One operation on each GPU: is_available() is also true for a GPU this build has no kernels for
    # (an RTX 50-series under cu126), whose first training step would fail with "no kernel image".
    try {
        Invoke-Native $Python @($TorchHelper, 'probe')
    } catch {
        throw 'PyTorch cannot run on this GPU (see the line above, which names the build to install).'
    }
}

function Invoke-Setup {
    if ($Dry) { Write-Host 'Dry run: nothing will be changed.' }
    if ($UndoProfile) {
        # Before anything needs conda: undo works after conda is uninstalled (any Python 3.8+ runs the helper).
        $conda = $null
        try { $conda = Find-Conda } catch { $conda = $null }
        Set-CondaHook $conda
        return
    }
    $conda = $null
    if ($EnvManager -eq 'conda' -or $CondaPath) {
        $conda = Find-Conda
    }
    if ($EnvManager -eq 'conda' -and -not $conda) {
        throw 'conda not found: install Miniconda or Miniforge (a Korean user name: into C:\miniconda3 or C:\miniforge3), pass -CondaPath <folder>, or use -EnvManager pip.'
    }
    if ($conda) { Write-Step "conda: $conda" }
    # The conda hook only where conda is the environment manager or -CondaPath asks for it: unasked, with
    # auto_activate_base it would put base's python first on PATH in every window, ahead of a .venv.
    if (($EnvManager -eq 'conda' -or $CondaPath) -and -not $SkipProfile) {
        Set-CondaHook $conda
        Test-CondaForPowerShell $conda
    }
    Test-PolicyAdvice $conda  # what a new window allows: the profile, .venv\Scripts\Activate.ps1, these scripts
    if ($ProfileOnly) { return }

    if ($EnvManager -eq 'conda') {
        Test-CondaTerms $conda
        Build-CondaEnv $conda
        $run = Get-CondaPython $conda
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
    foreach ($warning in $Warnings) { Write-Warning $warning }
    $ready = if ($Warnings.Count -gt 0) { 'Ready, except for the warning above.' } else { 'Ready.' }
    Write-Host "$ready Next (open a new PowerShell window first if the profile changed):"
    Write-Host "  $activate"
    Write-Host "  python -m $Package.train debug=fast   # one quick epoch, offline"
    Write-Host '  .\scripts\tasks.ps1 test               # or: train, lint, format, smoke'
}

$exitCode = 0
try {
    # Relative paths mean the folder the user typed them in: resolved before moving to the project.
    if ($ProfilePath) { $ProfilePath = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($ProfilePath) }
    if ($CondaPath) { $CondaPath = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($CondaPath) }
    Push-Location -LiteralPath $ProjectRoot
    try {
        Invoke-Setup
    } finally {
        Pop-Location
    }
} catch {
    Write-Host "setup.ps1: $($_.Exception.Message)" -ForegroundColor Red
    $exitCode = 1
}
exit $exitCode
