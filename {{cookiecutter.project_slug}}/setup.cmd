@echo off
rem Set up {{ cookiecutter.project_slug }} on Windows: double-click this file, or type .\setup.cmd in a terminal.
rem It runs scripts\setup.ps1 with the execution policy set to Bypass for that one run, so it works on a fresh
rem Windows, whose policy refuses scripts ("running scripts is disabled on this system"), and changes no
rem setting. Arguments pass through (setup.cmd -Cpu, setup.cmd -WhatIf). The window waits for a key at
rem the end, so that a double-click shows "Ready."; SETUP_NO_PAUSE=1 or CI skips the wait.
setlocal
powershell.exe -NoLogo -NoProfile -ExecutionPolicy Bypass -File "%~dp0scripts\setup.ps1" %*
set "SETUP_EXIT=%ERRORLEVEL%"
if not defined SETUP_NO_PAUSE if not defined CI pause
exit /b %SETUP_EXIT%
