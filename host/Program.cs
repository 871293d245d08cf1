return PluginEngine.Host.Cli.Run(args, Console.Out, Console.Error);
