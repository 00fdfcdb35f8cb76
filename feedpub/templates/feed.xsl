<?xml version="1.0" encoding="UTF-8"?>
<!--
  Shows an Atom or RSS feed to a person who opens it in a browser: what a feed
  is, the address to paste into a feed reader, and the latest posts.
  XSLT 1.0, no scripts, no outside resources. A site can replace it with its
  own templates/feed.xsl.
-->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:atom="http://www.w3.org/2005/Atom"
    exclude-result-prefixes="atom">

  <xsl:output method="html" encoding="UTF-8" indent="yes"
      doctype-system="about:legacy-compat"/>

  <xsl:template match="/">
    <xsl:choose>
      <xsl:when test="atom:feed">
        <xsl:call-template name="page">
          <xsl:with-param name="title" select="atom:feed/atom:title"/>
          <xsl:with-param name="description" select="atom:feed/atom:subtitle"/>
          <xsl:with-param name="language" select="atom:feed/@xml:lang"/>
          <xsl:with-param name="feed-url" select="atom:feed/atom:link[@rel='self']/@href"/>
          <xsl:with-param name="site-url"
              select="atom:feed/atom:link[not(@rel) or @rel='alternate'][1]/@href"/>
          <xsl:with-param name="format" select="'Atom'"/>
        </xsl:call-template>
      </xsl:when>
      <xsl:otherwise>
        <xsl:call-template name="page">
          <xsl:with-param name="title" select="rss/channel/title"/>
          <xsl:with-param name="description" select="rss/channel/description"/>
          <xsl:with-param name="language" select="rss/channel/language"/>
          <xsl:with-param name="feed-url" select="rss/channel/atom:link[@rel='self']/@href"/>
          <xsl:with-param name="site-url" select="rss/channel/link"/>
          <xsl:with-param name="format" select="'RSS'"/>
        </xsl:call-template>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="page">
    <xsl:param name="title"/>
    <xsl:param name="description"/>
    <xsl:param name="language"/>
    <xsl:param name="feed-url"/>
    <xsl:param name="site-url"/>
    <xsl:param name="format"/>
    <html lang="{$language}">
      <head>
        <meta charset="UTF-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <meta name="robots" content="noindex"/>
        <title><xsl:value-of select="$title"/> (<xsl:value-of select="$format"/> feed)</title>
        <style>
          :root { color-scheme: light dark; --accent: #b34700; --muted: #666; --box: #f6f3ee; }
          @media (prefers-color-scheme: dark) {
            :root { --accent: #ff9a57; --muted: #aaa; --box: #2a2723; }
          }
          * { box-sizing: border-box; }
          body {
            margin: 0 auto; padding: 1.5rem 1rem 3rem; max-width: 44rem;
            font: 1.0625rem/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans",
              "PingFang SC", "Hiragino Sans", "Microsoft YaHei", sans-serif;
            overflow-wrap: break-word;
          }
          a { color: var(--accent); }
          header h1 { margin: 0.5rem 0 0.25rem; font-size: 1.75rem; line-height: 1.25; }
          header p { margin: 0; color: var(--muted); }
          .about {
            margin: 1.5rem 0; padding: 1rem 1.25rem; border-radius: 0.5rem;
            background: var(--box); border-left: 0.3rem solid var(--accent);
          }
          .about h2 { margin: 0 0 0.5rem; font-size: 1.1rem; }
          .about p { margin: 0.5rem 0; }
          .feed-url {
            display: block; padding: 0.5rem 0.75rem; border-radius: 0.3rem;
            border: 1px solid var(--muted); font: 0.95rem/1.4 ui-monospace, Menlo, Consolas,
              monospace;
            user-select: all; -webkit-user-select: all; word-break: break-all;
          }
          ol.entries { list-style: none; margin: 0; padding: 0; }
          ol.entries li { padding: 0.75rem 0; border-bottom: 1px solid var(--box); }
          ol.entries a { font-weight: 600; text-decoration: none; }
          ol.entries a:hover, ol.entries a:focus { text-decoration: underline; }
          time { display: block; color: var(--muted); font-size: 0.9rem; }
          footer { margin-top: 2rem; color: var(--muted); font-size: 0.9rem; }
          @media (max-width: 30rem) {
            body { font-size: 1rem; }
            header h1 { font-size: 1.4rem; }
          }
        </style>
      </head>
      <body>
        <header>
          <p><xsl:value-of select="$format"/> feed</p>
          <h1><xsl:value-of select="$title"/></h1>
          <xsl:if test="normalize-space($description) != '' and $description != $title">
            <p><xsl:value-of select="$description"/></p>
          </xsl:if>
        </header>

        <section class="about" aria-labelledby="about-title">
          <h2 id="about-title">This is a web feed</h2>
          <p>A feed lets you follow this site in a feed reader (also called a news
            reader or RSS reader): new posts come to you, with no account to make
            and nothing to unsubscribe from but the feed itself.</p>
          <p>To subscribe, copy this address into your feed reader:</p>
          <code class="feed-url"><xsl:value-of select="$feed-url"/></code>
          <p>No feed reader yet? Most are free, on the web, on phones and on
            computers; search for “RSS reader”. Some browsers and mail programs
            can follow feeds too.</p>
        </section>

        <main>
          <h2>Latest posts</h2>
          <ol class="entries">
            <xsl:for-each select="atom:feed/atom:entry">
              <li>
                <a href="{atom:link[not(@rel) or @rel='alternate'][1]/@href}">
                  <xsl:value-of select="atom:title"/>
                </a>
                <xsl:variable name="date">
                  <xsl:choose>
                    <xsl:when test="atom:published"><xsl:value-of select="atom:published"/></xsl:when>
                    <xsl:otherwise><xsl:value-of select="atom:updated"/></xsl:otherwise>
                  </xsl:choose>
                </xsl:variable>
                <time datetime="{$date}"><xsl:value-of select="substring($date, 1, 10)"/></time>
              </li>
            </xsl:for-each>
            <xsl:for-each select="rss/channel/item">
              <li>
                <a href="{link}">
                  <xsl:choose>
                    <xsl:when test="normalize-space(title) != ''"><xsl:value-of select="title"/></xsl:when>
                    <xsl:otherwise><xsl:value-of select="link"/></xsl:otherwise>
                  </xsl:choose>
                </a>
                <!-- "Tue, 11 Feb 2025 02:00:00 +0000" -> "11 Feb 2025" -->
                <time><xsl:value-of select="substring(pubDate, 6, 11)"/></time>
              </li>
            </xsl:for-each>
          </ol>
        </main>

        <footer>
          <a href="{$site-url}">Visit the site</a>
        </footer>
      </body>
    </html>
  </xsl:template>
</xsl:stylesheet>
